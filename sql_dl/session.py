"""``session``: a SparkSession configured for sql_dl, then bootstrapped from a manifest."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

__all__ = ["DEFAULT_CONF", "session"]

# Applied under the caller's own conf, which wins.
DEFAULT_CONF: dict[str, str] = {
    "spark.app.name": "sql_dl",
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.catalogImplementation": "hive",
}

_SOURCE_CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
_LOCAL_MASTER = re.compile(r"^local(?:\[(\*|\d+)\])?$")
# Attempts per task on local masters, as spark.task.maxFailures gives on clusters.
LOCAL_TASK_ATTEMPTS = 4


def with_retries(master: str) -> str:
    """``local`` and ``local[N]`` as ``local[N,4]``: a task whose Python worker dies is
    retried, as on a cluster (Spark's local mode otherwise fails the query at once)."""
    match = _LOCAL_MASTER.match(master)
    return f"local[{match.group(1) or 1},{LOCAL_TASK_ATTEMPTS}]" if match else master


def session(manifest: str | os.PathLike | Mapping[str, Any] | None = None,
            master: str | None = None, *,
            conf: Mapping[str, str] | None = None,
            home: str | os.PathLike | None = None, warm_up: bool = False):
    """Builds (or gets) a SparkSession configured for sql_dl and bootstraps ``manifest``.

    The session runs Python workers with this interpreter, reuses them (so models stay
    loaded), sizes Arrow batches for images and keeps a Hive metastore (embedded Derby)
    and warehouse under ``home``. When ``SPARK_CONF_DIR`` is unset and the source
    checkout's ``conf/`` exists, Spark reads its ``spark-defaults.conf`` and
    ``log4j2.properties`` from there.

    Args:
        manifest: a manifest path or dict to bootstrap, or None for none.
        master: the Spark master, e.g. ``local[4]`` or ``spark://host:7077``; default
            ``local[*]`` unless the conf or the environment (``MASTER``) sets one. Local
            masters get task retries: ``local[4]`` runs as ``local[4,4]``.
        conf: extra Spark settings; they override sql_dl's defaults.
        home: directory of the metastore and warehouse; default ``$SQL_DL_HOME`` or
            ``~/.sql_dl``.
        warm_up: load the manifest's models in a Python worker per core now (see
            `bootstrap`).

    Returns:
        The SparkSession.
    """
    from pyspark.sql import SparkSession

    home = Path(home or os.environ.get("SQL_DL_HOME", Path.home() / ".sql_dl")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if "SPARK_CONF_DIR" not in os.environ and _SOURCE_CONF_DIR.is_dir():
        os.environ["SPARK_CONF_DIR"] = str(_SOURCE_CONF_DIR)
    java_options = [f"-Dderby.system.home={home}"]
    if os.environ.get("TMPDIR"):  # the JVM's temporary files go where Python's go
        java_options.append(f"-Djava.io.tmpdir={os.environ['TMPDIR']}")
    settings = {
        **DEFAULT_CONF,
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        **(conf or {}),
    }
    settings["spark.driver.extraJavaOptions"] = " ".join(
        java_options + [(conf or {}).get("spark.driver.extraJavaOptions", "")]).strip()
    builder = SparkSession.builder
    master = master or settings.pop("spark.master", None) or os.environ.get("MASTER") or "local[*]"
    builder = builder.master(with_retries(master))
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    if manifest is not None:
        from sql_dl.registration import bootstrap

        bootstrap(spark, manifest, warm_up=warm_up)
    return spark
