"""How sql_dl reaches the executors of a session: classic (SparkContext) or Spark Connect.

`backend_for` builds one backend per session and keeps it for the session's life.
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

from sql_dl import spark_internals
from sql_dl.errors import ModelLoadError, SqlDlWarning
from sql_dl.manifest import is_local, local_path
from sql_dl.models import ModelPlan
from sql_dl.staging import ship

__all__ = ["Backend", "backend_for"]

logger = logging.getLogger(__name__)

_backends: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_image_counters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext
_added_files: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext


class Backend:
    """A classic session: files go through SparkContext.addFile, remote URIs through Hadoop."""

    extension_checked = False  # whether bootstrap checked sql_dl's Spark extension

    def __init__(self, spark):
        self.spark = spark
        self.staging = spark_internals.spark_temp_dir(spark) / "sql_dl"  # removed with the JVM
        self.staging.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        """On a local master, runs Python workers with this interpreter unless told otherwise."""
        context = self.spark.sparkContext
        if ("PYSPARK_PYTHON" not in os.environ and context.master.startswith("local")
                and context.pythonExec != sys.executable):
            logger.info("Python workers will run %s (was %s)", sys.executable, context.pythonExec)
            spark_internals.set_python_exec(self.spark, sys.executable)

    def worker_reuse(self) -> bool:
        return self.spark.sparkContext.getConf().get("spark.python.worker.reuse", "true") == "true"

    def parallelism(self) -> int | None:
        """The cores the session's tasks can use at once, when known."""
        return self.spark.sparkContext.defaultParallelism

    def image_counter(self):
        """The accumulator of images sql_dl functions scored or could not decode (an
        `ImageCounts`), one per SparkContext."""
        from sql_dl.counts import ImageCounts

        context = self.spark.sparkContext
        if context not in _image_counters:
            counts = ImageCounts()
            _image_counters[context] = context.accumulator(counts.zero(None), counts)
        return _image_counters[context]

    def skipped_file_count(self) -> int | None:
        """See `sql_dl.registration.skipped_file_count`."""
        from sql_dl.spark_extension import extension_active

        return spark_internals.skipped_file_count(self.spark) if extension_active(
            self.spark) else None

    def describe_function(self, name: str, doc) -> None:
        """Gives a registered function the text DESCRIBE FUNCTION shows (a `FunctionDoc`)."""
        spark_internals.describe_function(self.spark, name, doc)

    def remember_models(self, plans: list[ModelPlan], replace: bool) -> None:
        """Tells keep-warm (`sql_dl.keep_warm`) which models to keep loaded in the workers."""
        from sql_dl.keep_warm import remember_models

        remember_models(self.spark, plans, replace)

    def ship_model(self, plan: ModelPlan) -> None:
        """Makes a model's file available to every executor (see `sql_dl.staging`)."""
        ship(self, plan.file, plan.staged_name)

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
        spark_internals.copy_to_local(self.spark, uri, target)
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

    def describe_function(self, name: str, doc) -> None:
        pass  # a Connect client cannot reach the server's function registry: Usage: N/A

    def image_counter(self):
        return None  # Spark Connect has no accumulators; executors' logs still count

    def skipped_file_count(self) -> int | None:
        return None  # the server's driver log names the skipped files

    def remember_models(self, plans: list[ModelPlan], replace: bool) -> None:
        pass  # keep-warm needs the SparkContext, which a Connect client has not

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
        backend = _backends[spark] = (ConnectBackend if _is_connect(spark) else Backend)(spark)
    return backend


def _is_connect(spark) -> bool:
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # pyspark without its Connect dependencies
        return False
    return isinstance(spark, ConnectSession)
