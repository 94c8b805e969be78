"""Plugin mode's processes: the stock Spark SQL entry points of the pyspark wheel, given
``sql-dl spark-conf``'s settings."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pyspark

from helpers.processes import free_port, run_cli

SPARK_HOME = Path(pyspark.__file__).parent
TIMEOUT = 300


def plugin_conf(manifest: Path, *args: str) -> list[str]:
    """``sql-dl spark-conf``'s words for ``manifest``, split as the shell's ``$(...)`` splits
    them."""
    result = run_cli("spark-conf", "--manifest", manifest, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def wait_for_port(port: int, process: subprocess.Popen | None, log: Path) -> None:
    """Waits until something listens on ``port``; fails with the end of ``log`` if
    ``process`` ends first or nothing listens within `TIMEOUT` seconds."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server ended: {log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on {port}: {log.read_text()[-3000:]}")



@contextlib.contextmanager
def stock_thrift_server(work: Path, conf: list[str], env: dict[str, str] | None = None):
    """The stock Thrift Server (``spark-submit --class ...HiveThriftServer2 spark-internal``)
    with ``conf``, in ``work`` (its environment ``env``, default this process's); yields its
    port once it listens."""
    port, log = free_port(), work / "thrift.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [SPARK_HOME / "bin" / "spark-submit", "--master", "local[2]",
             "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2", *conf,
             "--conf", "spark.ui.enabled=false",
             "--conf", f"spark.sql.warehouse.dir={work / 'warehouse'}",
             "--hiveconf", f"hive.server2.thrift.port={port}",
             "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1", "spark-internal"],
            cwd=work, stdout=out, stderr=subprocess.STDOUT,
            env={**(os.environ if env is None else env), "SQL_DL_CACHE": str(work / "cache")})
    try:
        wait_for_port(port, server, log)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)
