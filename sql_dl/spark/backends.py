"""How sql_dl reaches the executors of a session: classic (SparkContext) or Spark Connect.

`backend_for` builds one backend per session and keeps it for the session's life; it ships
files to the executors (`Backend.ship`), fetches remote files to the driver, and tells how
many tasks the session runs at once. `per_core` and `run_per_core` run a UDF in one task per
core.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import warnings
import weakref
from pathlib import Path

from sql_dl.errors import ModelLoadError, SqlDlWarning
from sql_dl.manifest import is_local, local_path
from sql_dl.plans import ModelPlan
from sql_dl.spark import internals
from sql_dl.staging import stage, staged_name

__all__ = ["Backend", "ConnectBackend", "backend_for", "is_connect", "per_core", "run_per_core"]

logger = logging.getLogger(__name__)

_backends: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_added_files: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext


class Backend:
    """A classic session: files go through SparkContext.addFile, remote URIs through Hadoop."""

    extension_checked = False  # whether bootstrap checked sql_dl's Spark extension

    def __init__(self, spark):
        self.spark = spark
        self.staging = internals.spark_temp_dir(spark) / "sql_dl"  # removed with the JVM
        self.staging.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        """On a local master, runs Python workers with this interpreter unless told otherwise."""
        context = self.spark.sparkContext
        if ("PYSPARK_PYTHON" not in os.environ and context.master.startswith("local")
                and context.pythonExec != sys.executable):
            logger.info("Python workers will run %s (was %s)", sys.executable, context.pythonExec)
            internals.set_python_exec(self.spark, sys.executable)

    def worker_reuse(self) -> bool:
        return self.spark.sparkContext.getConf().get("spark.python.worker.reuse", "true") == "true"

    def parallelism(self) -> int | None:
        """The cores the session's tasks can use at once, when known."""
        return self.spark.sparkContext.defaultParallelism

    def local(self) -> bool:
        """Whether the executors run on this machine (a local master): they then read the
        driver's files."""
        return self.spark.sparkContext.master.startswith("local")

    def describe_function(self, name: str, doc) -> None:
        """Gives a registered function the text DESCRIBE FUNCTION shows (a `FunctionDoc`)."""
        internals.describe_function(self.spark, name, doc)

    def ship(self, file: str, name: str | None = None) -> str:
        """Stages ``file`` (a model file or SavedModel directory) and makes it available to
        every executor; returns the name tasks find it by (`sql_dl.staging.shipped_file`)."""
        name = name or staged_name(file)
        self.add_file(stage(file, name, self.staging))
        return name

    def ship_model(self, plan: ModelPlan) -> None:
        """Makes a model's file available to every executor."""
        self.ship(plan.file, plan.staged_name)

    def add_file(self, path: Path) -> None:
        """Makes a staged file available to every executor as ``SparkFiles.get(path.name)``
        (once per SparkContext: a staged name stands for one content)."""
        context = self.spark.sparkContext
        added = _added_files.setdefault(context, set())
        if path.name not in added:
            context.addFile(str(path))
            added.add(path.name)

    def fetch(self, uri: str) -> str:
        """A local path for ``uri``, copying it from its Hadoop file system when remote."""
        if is_local(uri):
            return local_path(uri)
        name = f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{Path(uri).name}"
        target = self.staging / name
        internals.copy_to_local(self.spark, uri, target)
        return str(target)


class ConnectBackend(Backend):
    """A Spark Connect session: files go as session artifacts; remote URIs are not fetched."""

    def __init__(self, spark):
        self.spark = spark
        self.staging = Path(tempfile.mkdtemp(prefix="sql_dl-"))
        atexit.register(shutil.rmtree, self.staging, True)
        self.cores: int | None = None

    def prepare(self) -> None:
        """Warns when the server's Python workers may not be this interpreter."""
        python = os.environ.get("PYSPARK_PYTHON") or shutil.which("python3") or "python3"
        if os.path.realpath(python) != os.path.realpath(sys.executable):
            warnings.warn(
                f"a Spark Connect server runs UDFs with its PYSPARK_PYTHON (or python3), here "
                f"{python}; if that is not this interpreter, its workers cannot import sql_dl "
                f"and every query fails. Start the server with PYSPARK_PYTHON={sys.executable}. "
                f"Received: PYSPARK_PYTHON={os.environ.get('PYSPARK_PYTHON')!r}",
                SqlDlWarning, stacklevel=3)

    def worker_reuse(self) -> bool:
        return self.spark.conf.get("spark.python.worker.reuse", "true") == "true"

    def parallelism(self) -> int | None:
        """The server's default parallelism: the number of tasks Spark splits a ``range``
        into (one small job, once per session; a Connect client cannot read it directly)."""
        if self.cores is None:
            self.cores = self.spark.sql("SELECT count(DISTINCT p) AS n FROM (SELECT "
                                        "spark_partition_id() AS p FROM range(0, 65536))").first().n
        return self.cores

    def local(self) -> bool:
        return False  # the server's executors may be anywhere

    def describe_function(self, name: str, doc) -> None:
        pass  # a Connect client cannot reach the server's function registry: Usage: N/A

    def add_file(self, path: Path) -> None:
        from pyspark.errors import PySparkException

        try:
            self.spark.addArtifacts(str(path), file=True)
        except PySparkException as e:  # already added by an earlier bootstrap: same content
            if "already exists" not in str(e).lower() and "duplicate" not in str(e).lower():
                raise

    def fetch(self, uri: str) -> str:
        if is_local(uri):
            return local_path(uri)
        raise ModelLoadError(f"cannot read a remote file from a Spark Connect client; copy the "
                             f"file to this machine and give its local path. Received: {uri!r}")


def backend_for(spark) -> Backend:
    """The backend of ``spark``, built on first use and kept for the session's life."""
    backend = _backends.get(spark)
    if backend is None:
        backend = _backends[spark] = (ConnectBackend if is_connect(spark) else Backend)(spark)
    return backend


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext, no accumulators)."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # pyspark without its Connect dependencies
        return False
    return isinstance(spark, ConnectSession)


def per_core(spark, column, tasks: int | None = None):
    """A DataFrame of the one column ``column("id")`` (a UDF, or any function of a column
    name) over ``tasks`` rows, one per task (default: one per core of the session): the
    shape of every job that must reach each Python worker once, such as a warm-up, or
    reading what each executor holds."""
    tasks = tasks or backend_for(spark).parallelism() or 1
    return spark.range(0, tasks, 1, tasks).select(column("id"))


def run_per_core(spark, column, tasks: int | None = None) -> None:
    """Runs `per_core`'s job for its effect on the Python workers (a warm-up), keeping no
    result."""
    per_core(spark, column, tasks).write.format("noop").mode("overwrite").save()
