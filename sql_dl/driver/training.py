"""Keras training on the driver's side: a training set is written once as Parquet where
executors read it (`write_training_set`), then each parameter map trains in its own task
(`run_jobs`, running `sql_dl.executor.training.train`). The driver never holds the training
data; it gets back the trained model's bytes and its history.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid

from sql_dl.errors import FunctionArgumentError
from sql_dl.executor.training import train
from sql_dl.manifest import is_local, local_path
from sql_dl.plans import TrainingJob, TrainingResult
from sql_dl.spark import internals
from sql_dl.spark.backends import backend_for

__all__ = ["label_column", "remove", "run_jobs", "staging_dir", "write_training_set"]

logger = logging.getLogger(__name__)


def staging_dir(spark, given: str | None) -> str:
    """Where a training set is written: a new folder under ``given``; else, on a local
    master, under the driver's temporary directory (removed with the JVM), and on a cluster
    under the warehouse directory, which must then be storage the executors' Python can
    read, such as HDFS or S3. Never in the current directory."""
    backend = backend_for(spark)
    if given:
        base = given
    elif backend.local():
        base = str(backend.staging / "training")
    else:
        base = f"{spark.conf.get('spark.sql.warehouse.dir').rstrip('/')}/_sql_dl_training"
    return f"{base.rstrip('/')}/{uuid.uuid4().hex}"


def label_column(dataset, label_col: str, output_size: int, owner: str):
    """The label column as one-hot ``array<float>`` of ``output_size``, checked with one
    aggregation (no rows reach the driver).

    Accepts class indices (any numeric type) or one-hot vectors (``pyspark.ml`` vectors or
    numeric arrays).

    Raises:
        FunctionArgumentError: the column is missing, of another type, or does not fit the model's
            ``output_size`` outputs; the message says which rows.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, NumericType

    if label_col not in dataset.columns:
        raise FunctionArgumentError(
            f"{owner}: labelCol {label_col!r} is not a column of the dataset; give one of "
            f"{', '.join(dataset.columns)}. Received: labelCol={label_col!r}")
    data_type = dataset.schema[label_col].dataType
    label = F.col(label_col)
    if isinstance(data_type, NumericType):
        stats = dataset.agg(F.min(label).alias("low"), F.max(label).alias("high"),
                            F.count_if(label != F.floor(label)).alias("fractional")).first()
        if stats.fractional or (stats.low is not None and stats.low < 0) or (
                stats.high is not None and stats.high >= output_size):
            raise FunctionArgumentError(
                f"{owner}: labelCol {label_col!r} holds class indices, which must be whole "
                f"numbers from 0 to {output_size - 1} for a model with {output_size} outputs. "
                f"Received: min={stats.low}, max={stats.high}, "
                f"{stats.fractional} fractional value(s)")
        index = label.cast("int")
        return F.transform(F.sequence(F.lit(0), F.lit(output_size - 1)),
                           lambda i: F.when(i == index, 1.0).otherwise(0.0).cast("float"))
    if isinstance(data_type, VectorUDT):
        array = vector_to_array(label, "float32")
    elif isinstance(data_type, ArrayType) and isinstance(data_type.elementType, NumericType):
        array = label.cast("array<float>")
    else:
        raise FunctionArgumentError(
            f"{owner}: labelCol {label_col!r} must hold class indices (a number) or one-hot "
            f"vectors (a pyspark.ml vector or a numeric array). "
            f"Received: {data_type.simpleString()}")
    sizes = dataset.agg(F.min(F.size(array)).alias("low"),
                        F.max(F.size(array)).alias("high")).first()
    if (sizes.low, sizes.high) not in ((output_size, output_size), (None, None)):
        raise FunctionArgumentError(
            f"{owner}: labelCol {label_col!r} holds vectors of {sizes.low} to {sizes.high} "
            f"values, but the model has {output_size} outputs. "
            f"Received: sizes {sizes.low}..{sizes.high}")
    return array


def write_training_set(frame, data_dir: str) -> int:
    """Writes ``frame`` (columns ``x``, ``y``: ``array<float>``; rows with NULL dropped) as
    Parquet; returns its row count. Runs as Spark jobs on the executors."""
    frame.where("x IS NOT NULL AND y IS NOT NULL").write.mode("overwrite").parquet(data_dir)
    return frame.sparkSession.read.parquet(data_dir).count()


def remove(data_dir: str, spark) -> None:
    """Deletes a training set written by `write_training_set`."""
    if is_local(data_dir):
        shutil.rmtree(local_path(data_dir), ignore_errors=True)
        return
    internals.delete_path(spark, data_dir)


def run_jobs(spark, jobs: list[TrainingJob]) -> list[TrainingResult]:
    """Trains each job in its own Spark task, as many at once as there are free cores."""
    started = time.monotonic()
    results = spark.sparkContext.parallelize(jobs, len(jobs)).map(train).collect()
    logger.info("Trained %d model(s) in %.1f s", len(jobs), time.monotonic() - started)
    return sorted(results, key=lambda r: r.index)
