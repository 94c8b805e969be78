"""GPU executors without a GPU: Spark's real GPU scheduling (a fake discovery script that
reports GPUs 0 and 1, on local-cluster), and sql_dl's placement of every model call on the
GPU Spark assigned to its task, recorded by an injected placement function
(tests/gpu_placement.py) that then runs the call on the CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sql_dl import devices

# Runs in its own driver: a GPU-scheduled local-cluster session. Each phase is a job group,
# which the placement records name.
SCRIPT = r"""
import json, sys, warnings
import sql_dl
from sql_dl.ml import DeepImageFeaturizer, read_images

manifest, photos, out, discovery, cnn = sys.argv[1:6]
spark = sql_dl.session(master="local-cluster[1,2,1024]", conf={
    "spark.worker.resource.gpu.amount": "2",
    "spark.worker.resource.gpu.discoveryScript": discovery,
    "spark.executor.resource.gpu.amount": "2",
    "spark.task.resource.gpu.amount": "1",
    "spark.sql.shuffle.partitions": "2"})
context = spark.sparkContext
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    context.setJobGroup("bootstrap", "bootstrap")
    sql_dl.bootstrap(spark, manifest, warm_up=True)
result = {"warnings": [str(w.message) for w in caught
                       if w.category.__name__ == "SqlDlWarning"]}
context.setJobGroup("sql", "sql")
rows = spark.sql("SELECT path, cnn(image) AS p, cnn_features(image) AS f, "
                 "cnn_top_k(image, 2)[0].class AS best FROM photos").collect()
result["sql"] = {r.path: r.p for r in rows}
context.setJobGroup("ml", "ml")
images = read_images(spark, photos, num_partitions=4)
featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelFile=cnn,
                                 preprocessMode="caffe")
result["ml"] = sum(r.features is not None
                   for r in featurizer.transform(images).select("features").collect())
context.setJobGroup("train", "train")
from sql_dl.cli.train import train_head
report = train_head(spark, manifest, "cnn", "photos", out, "cnn_head", epochs=1, held_out=0.3)
context.setJobGroup("devices", "devices")
result["devices"] = [r.asDict() for r in spark.table("sql_dl_devices").collect()]
print(json.dumps(result))
spark.stop()
"""


def start_gpu_run(work: Path, photos_dir: Path, cnn_file: Path,
                  labels_file: Path) -> subprocess.Popen:
    """Starts `SCRIPT` in ``work``: its placement records go to ``work/placements``, its
    output to ``out`` and ``err`` there. The suite starts it with its first test (conftest's
    ``gpu_run_started``), at a low CPU priority (its executors too), so that it takes the
    cores the other tests leave idle rather than slowing them."""
    discovery = work / "discover_gpus.sh"
    discovery.write_text('#!/bin/bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    discovery.chmod(0o755)
    manifest = work / "models.yaml"
    manifest.write_text(yaml.safe_dump({
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32",
                           "labels": str(labels_file), "batch_size": 2}},
        "images": {"photos": {"path": str(photos_dir)}},
        "cache": {"predictions": False}}))  # every call runs the model
    (work / "placements").mkdir()
    tests = str(Path(__file__).parent)
    env = {**os.environ, devices.PLACEMENT_ENV: "gpu_placement:record",
           "SQL_DL_TEST_PLACEMENTS": str(work / "placements"), "SQL_DL_CACHE": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    with open(work / "out", "w") as out, open(work / "err", "w") as err:
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(manifest), str(photos_dir),
                                 str(work / "head.keras"), str(discovery), str(cnn_file)],
                                stdout=out, stderr=err, env=env, cwd=work,
                                preexec_fn=lambda: os.nice(15))


@pytest.fixture(scope="module")
def gpu_run(gpu_run_started):
    """The script's result, its placement records and its stderr."""
    process, work = gpu_run_started
    assert process.wait(timeout=600) == 0, (work / "err").read_text()[-5000:]
    placed = [json.loads(line) for f in (work / "placements").iterdir()
              for line in f.read_text().splitlines()]
    return (json.loads((work / "out").read_text().splitlines()[-1]), placed,
            (work / "err").read_text())


def test_every_model_call_runs_on_the_gpu_spark_assigned_to_its_task(gpu_run):
    _, placed, _ = gpu_run
    assert placed
    for record in placed:
        assert len(record["task_gpus"]) == 1
        assert record["device"] == f"/GPU:{record['task_gpus'][0]}", record
    assert {r["phase"] for r in placed} >= {"bootstrap", "sql", "ml", "train"}
    for phase in ("sql", "ml"):  # two tasks at once, one GPU each: both GPUs in use
        assert {r["task_gpus"][0] for r in placed if r["phase"] == phase} == {"0", "1"}, phase


def test_a_worker_loads_a_model_once_per_device_it_was_asked_to_use(gpu_run):
    result, placed, _ = gpu_run
    rows = [r for r in result["devices"] if r["model"] == "cnn"]
    assert rows and all(r["loads"] == 1 for r in rows), rows
    assert {r["device"] for r in rows} <= {"/GPU:0", "/GPU:1"}
    used = {(r["pid"], r["device"]) for r in placed}  # the ML transformer's loads count too
    assert {(r["worker"], r["device"]) for r in rows} <= used


def test_outputs_equal_keras_and_the_missing_gpu_is_reported_once(gpu_run, cnn_file, photos):
    import keras
    from test_images import keras_tensor
    from test_registration import local

    result, _, _ = gpu_run
    model = keras.saving.load_model(cnn_file)
    scored = {local(path): p for path, p in result["sql"].items() if p is not None}
    assert sorted(scored) == photos
    for path, p in scored.items():
        expected = model.predict(keras_tensor(path, (32, 32), mode="caffe"), verbose=0)[0]
        np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)
    assert result["ml"] == len(photos)
    assert len(result["warnings"]) == 1, result["warnings"]
    assert result["warnings"][0].startswith(
        "the executors are given GPUs, but TensorFlow ")
    assert "sees none: it is built without CUDA (the tensorflow-cpu package). Every model runs " \
           "on the CPU." in result["warnings"][0]
    assert re.search(r"Received: spark.executor.resource.gpu.amount=2, task GPUs \['[01]'\]$",
                     result["warnings"][0])


def test_without_gpu_resources_nothing_is_placed(spark, photos_dir, cnn_file, labels_file):
    """In a session without GPU resources: no task device, no placement, one model copy."""
    import sql_dl

    assert devices.task_gpus() == () and devices.task_device() is None
    sql_dl.bootstrap(spark, {"preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
                             "models": {"cnn_cpu": {"path": str(cnn_file), "preprocessor": "p32",
                                                    "labels": str(labels_file)}},
                             "images": {"photos": {"path": str(photos_dir)}},
                             "cache": {"predictions": False}})  # the model must run
    spark.sql("SELECT cnn_cpu(image) FROM photos").collect()
    listed = spark.table("sql_dl_devices").collect()
    rows = [r for r in listed if r.model == "cnn_cpu"]
    assert rows and {r.device for r in rows} == {"default"}, listed
    assert all(r.loads == 1 for r in rows)


def test_placement_env_must_name_a_function(monkeypatch):
    monkeypatch.setattr(devices, "_placement", None)
    monkeypatch.setenv(devices.PLACEMENT_ENV, "no_such_module_xyz:place")
    with pytest.raises(ValueError, match=r"SQL_DL_DEVICE_PLACEMENT names no importable function "
                                         r"\(module:function\): .*Received: "
                                         r"'no_such_module_xyz:place'"):
        with devices.placed("/GPU:0"):
            pass


def test_cuda_visible_devices_renumber_gpus(monkeypatch):
    monkeypatch.setattr(devices, "task_gpus", lambda: ("3",))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert devices.task_device() == "/GPU:1"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.task_device() == "/GPU:3"
