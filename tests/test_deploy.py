"""A real standalone cluster: a Master and two Workers started with ``spark-class``, whose
executors get their Python environment from ``sql-dl pack``'s archive through
``spark.archives`` (``sql-dl spark-conf --archive``), not from the Python they would
otherwise run, which has no sql_dl. The stock Thrift Server drives it in plugin mode."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers.plugin import SPARK_HOME, plugin_conf, stock_thrift_server
from helpers.processes import free_port, run_cli, write_manifest
from helpers.reference import TOLERANCE, expected_best, keras_outputs, local

# what would make the cluster's processes find a Python with sql_dl without the archive
_DRIVER_ONLY = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "PYTHONPATH")


def _python_workers(work_dirs: list[Path]) -> list[tuple[str, Path]]:
    """(command line, working directory) of each Python worker process whose working
    directory is under one of ``work_dirs`` (a Worker's executors)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes().decode().replace("\0", " ").strip()
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if "pyspark.daemon" in command and any(d in cwd.parents for d in work_dirs):
            found.append((command, cwd))
    return found


@pytest.mark.slow
def test_a_standalone_cluster_runs_the_manifest_from_the_packed_environment(
        tmp_path, photos, photos_dir, cnn_file, labels_file):
    archive = tmp_path / "sql_dl-env.tar.gz"
    packed = run_cli("pack", "--output", archive, "--compress-level", "1")
    assert packed.returncode == 0, packed.stderr
    assert f"packed: {archive} (" in packed.stdout
    base_python = packed.stdout.split("Its Python is ", 1)[1].split(":", 1)[0]
    no_sql_dl = subprocess.run([base_python, "-c", "import sql_dl"], capture_output=True,
                               cwd=tmp_path)
    assert no_sql_dl.returncode == 1  # the executors' interpreter has no sql_dl of its own

    env = {k: v for k, v in os.environ.items() if k not in _DRIVER_ONLY}
    env["SQL_DL_CACHE"] = str(tmp_path / "cache")
    spark_class = SPARK_HOME / "bin" / "spark-class"
    port, ui = free_port(), free_port()
    work_dirs = [tmp_path / f"worker{i}" for i in range(2)]
    processes = []
    try:
        with open(tmp_path / "master.log", "w") as log:
            processes.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(ui)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        for i, work in enumerate(work_dirs):
            work.mkdir()
            with open(tmp_path / f"worker{i}.log", "w") as log:
                processes.append(subprocess.Popen(
                    [spark_class, "org.apache.spark.deploy.worker.Worker",
                     f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", "1",
                     "--memory", "3g", "--work-dir", str(work), "--webui-port", str(free_port())],
                    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        deadline = time.monotonic() + 120
        while True:  # both Workers registered with the Master
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
                    if json.load(r).get("aliveworkers") == 2:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "master.log").read_text()[-3000:]
            time.sleep(1)

        manifest = write_manifest(tmp_path / "models.yaml", photos_dir, cnn_file, labels_file)
        conf = plugin_conf(manifest, "--archive", str(archive))
        assert "spark.pyspark.python=./environment/bin/python" in conf
        conf += ["--master", f"spark://127.0.0.1:{port}", "--conf", "spark.executor.memory=1g",
                 "--conf", "spark.executor.cores=1", "--conf", "spark.cores.max=2"]
        from pyhive import hive

        with stock_thrift_server(tmp_path, conf, env=env) as thrift:
            cursor = hive.connect("127.0.0.1", thrift, username="alice").cursor()
            cursor.execute("SELECT path, cnn(image), cnn_top_k(image, 1)[0].class "
                           "FROM photos ORDER BY path")
            rows = cursor.fetchall()
            files = [local(r[0]) for r in rows]
            assert files == photos
            np.testing.assert_allclose([json.loads(r[1]) for r in rows],
                                       keras_outputs(cnn_file, files, "caffe"), **TOLERANCE)
            assert [r[2] for r in rows] == expected_best(cnn_file, files)
            cursor.execute("SELECT count(DISTINCT worker) FROM sql_dl_devices")
            assert cursor.fetchall()[0][0] >= 1  # a Python worker of an executor loaded it
            workers = _python_workers(work_dirs)
            assert workers, "no Python worker runs in an executor's directory"
            for command, cwd in workers:  # each runs the archive's Python, unpacked there
                assert command.startswith("./environment/bin/python"), command
                assert (cwd / "environment" / "lib").is_dir()
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
