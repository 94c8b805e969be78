"""How bootstrap reaches the executors of a session: classic (SparkContext) or Spark Connect."""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

from sql_dl.errors import ModelLoadError
from sql_dl.manifest import is_local, local_path
from sql_dl.models import ModelPlan, stage

__all__ = ["Backend", "backend_for"]

logger = logging.getLogger(__name__)

_bad_image_counters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Backend:
    """A classic session: files go through SparkContext.addFile, remote URIs through Hadoop."""

    def __init__(self, spark):
        self.spark = spark
        self.staging = Path(spark.sparkContext._temp_dir) / "sql_dl"  # removed with the JVM
        self.staging.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        """On a local master, runs Python workers with this interpreter unless told otherwise."""
        context = self.spark.sparkContext
        if ("PYSPARK_PYTHON" not in os.environ and context.master.startswith("local")
                and context.pythonExec != sys.executable):
            logger.info("Python workers will run %s (was %s)", sys.executable, context.pythonExec)
            context.pythonExec = sys.executable

    def worker_reuse(self) -> bool:
        return self.spark.sparkContext.getConf().get("spark.python.worker.reuse", "true") == "true"

    def parallelism(self) -> int | None:
        """The cores the session's tasks can use at once, when known."""
        return self.spark.sparkContext.defaultParallelism

    def bad_image_counter(self):
        """The session's accumulator of images sql_dl functions could not decode."""
        context = self.spark.sparkContext
        if context not in _bad_image_counters:
            _bad_image_counters[context] = context.accumulator(0)
        return _bad_image_counters[context]

    def ship_model(self, plan: ModelPlan) -> None:
        """Stages a model's file and makes it available to every executor."""
        self.ship(stage(plan.file, plan.staged_name, self.staging))

    def ship(self, path: Path) -> None:
        """Makes a staged file available to every executor as ``SparkFiles.get(path.name)``."""
        self.spark.sparkContext.addFile(str(path))

    def fetch(self, uri: str) -> str:
        """A local path for ``uri``, copying it from its Hadoop file system when remote."""
        if is_local(uri):
            return local_path(uri)
        context = self.spark.sparkContext
        source = context._jvm.org.apache.hadoop.fs.Path(uri)
        name = f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}-{source.getName()}"
        target = self.staging / name
        filesystem = source.getFileSystem(context._jsc.hadoopConfiguration())
        filesystem.copyToLocalFile(False, source, context._jvm.org.apache.hadoop.fs.Path(
            target.as_uri()), True)
        return str(target)


class ConnectBackend(Backend):
    """A Spark Connect session: files go as session artifacts; remote URIs are not fetched."""

    def __init__(self, spark):
        self.spark = spark
        self.staging = Path(tempfile.mkdtemp(prefix="sql_dl-"))
        atexit.register(shutil.rmtree, self.staging, True)

    def prepare(self) -> None:
        """Warns when the server's Python workers may not be this interpreter."""
        python = os.environ.get("PYSPARK_PYTHON") or shutil.which("python3") or "python3"
        if os.path.realpath(python) != os.path.realpath(sys.executable):
            logger.warning("A Spark Connect server runs UDFs with its PYSPARK_PYTHON (or python3): "
                           "if that is %s, not this interpreter (%s), they cannot import sql_dl; "
                           "set PYSPARK_PYTHON=%s before starting the server", python,
                           sys.executable, sys.executable)

    def worker_reuse(self) -> bool:
        return self.spark.conf.get("spark.python.worker.reuse", "true") == "true"

    def parallelism(self) -> int | None:
        return None  # not visible from a Connect client

    def bad_image_counter(self):
        return None  # Spark Connect has no accumulators; executors' logs still count

    def ship(self, path: Path) -> None:
        from pyspark.errors import PySparkException

        try:
            self.spark.addArtifacts(str(path), file=True)
        except PySparkException as e:  # already added by an earlier bootstrap: same content
            if "already exists" not in str(e).lower() and "duplicate" not in str(e).lower():
                raise

    def fetch(self, uri: str) -> str:
        if is_local(uri):
            return local_path(uri)
        raise ModelLoadError(f"cannot read {uri!r} from a Spark Connect client; copy the file "
                             "to this machine and give its local path")


def backend_for(spark) -> Backend:
    """The backend matching the kind of ``spark``."""
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # pyspark without its Connect dependencies
        return Backend(spark)
    return ConnectBackend(spark) if isinstance(spark, ConnectSession) else Backend(spark)
