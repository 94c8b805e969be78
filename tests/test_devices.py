"""GPU executors without a GPU: Spark's real GPU scheduling (a fake discovery script that
reports GPUs 0 and 1, on local-cluster), and sql_dl's placement of every model call on the
GPU Spark assigned to its task, recorded by an injected placement function
(tests/gpu_placement.py) that then runs the call on the CPU."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sql_dl.executor import devices


@pytest.fixture(scope="module")
def gpu_run(gpu_run_started):
    """The script's result, its placement records and its stderr."""
    process, work = gpu_run_started
    assert process.wait(timeout=600) == 0, (work / "err").read_text()[-5000:]
    placed = [json.loads(line) for f in (work / "placements").iterdir()
              for line in f.read_text().splitlines()]
    return (json.loads((work / "out").read_text().splitlines()[-1]), placed,
            (work / "err").read_text())


@pytest.mark.slow
def test_every_model_call_runs_on_the_gpu_spark_assigned_to_its_task(gpu_run):
    _, placed, _ = gpu_run
    assert placed
    for record in placed:
        assert len(record["task_gpus"]) == 1
        assert record["device"] == f"/GPU:{record['task_gpus'][0]}", record
    assert {r["phase"] for r in placed} >= {"bootstrap", "sql", "ml", "train"}
    for phase in ("sql", "ml"):  # two tasks at once, one GPU each: both GPUs in use
        assert {r["task_gpus"][0] for r in placed if r["phase"] == phase} == {"0", "1"}, phase


@pytest.mark.slow
def test_a_worker_loads_a_model_once_per_device_it_was_asked_to_use(gpu_run):
    result, placed, _ = gpu_run
    rows = [r for r in result["devices"] if r["model"] == "cnn"]
    assert rows and all(r["loads"] == 1 for r in rows), rows
    assert {r["device"] for r in rows} <= {"/GPU:0", "/GPU:1"}
    used = {(r["pid"], r["device"]) for r in placed}  # the ML transformer's loads count too
    assert {(r["worker"], r["device"]) for r in rows} <= used


@pytest.mark.slow
def test_outputs_equal_keras_and_the_missing_gpu_is_reported_once(gpu_run, cnn_file, photos):
    import keras
    from helpers.reference import keras_tensor, local

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
