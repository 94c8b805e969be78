"""A real standalone cluster, started by the Deploy page's commands as written: a Master and
two Workers (``spark-class``), and the stock Thrift Server in plugin mode on it, whose
executors get their Python environment from ``sql-dl pack``'s archive
(``spark.archives``), not from the Python they would otherwise run, which has no sql_dl."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.plugin import wait_for_port
from helpers.processes import doc_blocks, free_port, write_manifest
from helpers.reference import assert_equal_keras

# what would let the cluster's processes find a Python with sql_dl without the archive
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
    from pyhive import hive

    root = tmp_path  # a checkout's layout: .venv, conf/models.yaml
    (root / ".venv").symlink_to(sys.prefix)
    (root / "conf").mkdir()
    write_manifest(root / "conf" / "models.yaml", photos_dir, cnn_file, labels_file)
    env = {k: v for k, v in os.environ.items() if k not in _DRIVER_ONLY}
    env["SQL_DL_CACHE"] = str(root / "cache")

    packing, = doc_blocks("Either install the same environment at the same path on every", 1)
    pack = next(line for line in packing.splitlines() if "sql-dl pack" in line)
    packed = subprocess.run(["bash", "-c", pack + " --compress-level 1"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=900)
    assert packed.returncode == 0, packed.stderr[-3000:]
    base_python = packed.stdout.split("Its Python is ", 1)[1].split(":", 1)[0]
    no_sql_dl = subprocess.run([base_python, "-c", "import sql_dl"], capture_output=True,
                               cwd=root)
    assert no_sql_dl.returncode == 1  # the executors' interpreter has no sql_dl of its own

    cluster, = doc_blocks("**Standalone** (as tested", 1)
    port, thrift = free_port(), free_port()
    work_dirs = [root / f"worker{i}" for i in range(2)]
    lines = []
    for line in cluster.replace("7077", str(port)).splitlines():
        if line.startswith("HOST="):
            line = "HOST=127.0.0.1"
        if "deploy.worker.Worker" in line:  # two worker machines: one directory each
            lines += [line.replace(" &", f" --work-dir {work} &") for work in work_dirs]
            continue
        lines.append(line.replace("spark-internal", f"spark-internal --hiveconf "
                                  f"hive.server2.thrift.port={thrift} --hiveconf "
                                  "hive.server2.thrift.bind.host=127.0.0.1"))
    log = root / "cluster.log"
    with open(log, "w") as out:
        started = subprocess.Popen(["bash", "-c", "\n".join(lines)], cwd=root, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(thrift, started, log)
        cursor = hive.connect("127.0.0.1", thrift, username="alice").cursor()
        cursor.execute("SELECT path, cnn(image), cnn_top_k(image, 1)[0].class "
                       "FROM photos ORDER BY path")
        assert_equal_keras(cursor.fetchall(), photos, cnn_file)
        cursor.execute("SELECT count(DISTINCT worker) FROM sql_dl_devices")
        assert cursor.fetchall()[0][0] >= 1  # a Python worker of an executor loaded the model
        workers = _python_workers(work_dirs)
        assert workers, "no Python worker runs in an executor's directory"
        for command, cwd in workers:  # each runs the archive's Python, unpacked there
            assert command.startswith("./environment/bin/python"), command
            assert (cwd / "environment" / "lib").is_dir()
    finally:
        os.killpg(started.pid, signal.SIGTERM)  # the Master, the Workers and the server
        started.wait(timeout=60)
