"""Keras training in Spark tasks: a training set is written once as Parquet where executors
read it, then each parameter map trains in its own task, streaming the files into
``model.fit``. The driver never holds the training data; it gets back the trained model's
bytes and its history.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sql_dl.manifest import is_local, local_path

__all__ = ["TrainingJob", "TrainingResult", "label_column", "run_jobs", "staging_dir",
           "write_training_set"]

logger = logging.getLogger(__name__)

SHUFFLE_BUFFER = 2048
READ_BATCH = 256


@dataclass(frozen=True)
class TrainingJob:
    """One model to train in one task; small and picklable (no model, no data inside)."""

    index: int
    model_file: str
    staged_name: str
    data_dir: str
    input_shape: tuple[int, ...]
    output_size: int
    optimizer: str = "adam"
    loss: str = "categorical_crossentropy"
    fit_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    trust_code: bool = False
    rows: int | None = None  # in the training set: tells Keras how many steps an epoch has


@dataclass(frozen=True)
class TrainingResult:
    index: int
    model: bytes  # the trained model as a .keras file
    history: dict[str, list[float]]
    pid: int  # the Python process that trained it
    seconds: float


def staging_dir(spark, given: str | None) -> str:
    """Where a training set is written: ``given``, or a new folder under the warehouse
    directory (a local path in local mode; on a cluster it must be storage the executors'
    Python can read, such as HDFS or S3)."""
    base = given or spark.conf.get("spark.sql.warehouse.dir")
    return f"{base.rstrip('/')}/_sql_dl_training/{uuid.uuid4().hex}"


def label_column(dataset, label_col: str, output_size: int, owner: str):
    """The label column as one-hot ``array<float>`` of ``output_size``, checked with one
    aggregation (no rows reach the driver).

    Accepts class indices (any numeric type) or one-hot vectors (``pyspark.ml`` vectors or
    numeric arrays).

    Raises:
        ValueError: the column is missing, of another type, or does not fit the model's
            ``output_size`` outputs; the message says which rows.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, NumericType

    if label_col not in dataset.columns:
        raise ValueError(f"{owner}: labelCol {label_col!r} is not a column of the dataset "
                         f"(columns: {', '.join(dataset.columns)})")
    data_type = dataset.schema[label_col].dataType
    label = F.col(label_col)
    if isinstance(data_type, NumericType):
        stats = dataset.agg(F.min(label).alias("low"), F.max(label).alias("high"),
                            F.count_if(label != F.floor(label)).alias("fractional")).first()
        if stats.fractional or (stats.low is not None and stats.low < 0) or (
                stats.high is not None and stats.high >= output_size):
            raise ValueError(
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
        raise ValueError(f"{owner}: labelCol {label_col!r} must hold class indices (a number) "
                         "or one-hot vectors (a pyspark.ml vector or a numeric array). "
                         f"Received: {data_type.simpleString()}")
    sizes = dataset.agg(F.min(F.size(array)).alias("low"), F.max(F.size(array)).alias("high")).first()
    if (sizes.low, sizes.high) not in ((output_size, output_size), (None, None)):
        raise ValueError(f"{owner}: labelCol {label_col!r} holds vectors of {sizes.low} to "
                         f"{sizes.high} values, but the model has {output_size} outputs. "
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
    from sql_dl.spark_internals import delete_path

    delete_path(spark, data_dir)


def run_jobs(spark, jobs: list[TrainingJob]) -> list[TrainingResult]:
    """Trains each job in its own Spark task, as many at once as there are free cores."""
    started = time.monotonic()
    results = spark.sparkContext.parallelize(jobs, len(jobs)).map(train).collect()
    logger.info("Trained %d model(s) in %.1f s", len(jobs), time.monotonic() - started)
    return sorted(results, key=lambda r: r.index)


def train(job: TrainingJob) -> TrainingResult:
    """Runs inside a task: compiles the shipped model, streams the training set into fit."""
    import keras

    from sql_dl.devices import placed, task_device
    from sql_dl.models import load_keras_model
    from sql_dl.staging import shipped_file
    from sql_dl.worker import configure_threads

    started = time.monotonic()
    configure_threads()
    keras.utils.set_random_seed(job.seed)
    with placed(task_device()):
        return _fit(job, load_keras_model(shipped_file(job.model_file, job.staged_name),
                                          job.trust_code), started)


def _fit(job: TrainingJob, model, started: float) -> TrainingResult:
    """Compiles and fits ``model`` on the job's data, under the caller's device scope."""
    import keras

    params = dict(job.fit_params)
    batch_size = int(params.pop("batch_size", 32))
    optimizer: dict[str, Any] = {"class_name": job.optimizer, "config": {}}
    if "learning_rate" in params:
        optimizer["config"]["learning_rate"] = float(params.pop("learning_rate"))
    model.compile(optimizer=keras.optimizers.get(optimizer), loss=job.loss)
    sparse = job.loss.startswith("sparse_")
    # The pipeline shuffles (seeded, bounded) and knows its length, so Keras neither warns
    # that shuffle=True is ignored for datasets nor that the input "ran out of data".
    history = model.fit(_dataset(job, batch_size, sparse), **{"verbose": 0, **params,
                                                              "shuffle": False})
    with tempfile.TemporaryDirectory(prefix="sql_dl-trained-") as directory:
        path = Path(directory) / "model.keras"
        model.save(path)
        data = path.read_bytes()
    return TrainingResult(job.index, data,
                          {k: [float(v) for v in values] for k, values in history.history.items()},
                          os.getpid(), time.monotonic() - started)


def _dataset(job: TrainingJob, batch_size: int, sparse: bool):
    """The training set as a tf.data pipeline that reads the Parquet files in order, a
    batch at a time, and shuffles rows in a bounded buffer (seeded)."""
    import tensorflow as tf

    labels = tf.TensorSpec((None,) if sparse else (None, job.output_size), tf.float32)
    signature = (tf.TensorSpec((None, *job.input_shape), tf.float32), labels)
    dataset = tf.data.Dataset.from_generator(
        lambda: _parquet_batches(job, sparse), output_signature=signature)
    dataset = (dataset.unbatch()
               .shuffle(SHUFFLE_BUFFER, seed=job.seed, reshuffle_each_iteration=True)
               .batch(batch_size))
    if job.rows is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(
            math.ceil(job.rows / batch_size)))
    return dataset


def _parquet_batches(job: TrainingJob, sparse: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import pyarrow.dataset as ds
    from pyarrow import fs

    if is_local(job.data_dir):
        filesystem, root = fs.LocalFileSystem(), local_path(job.data_dir)
    else:
        filesystem, root = fs.FileSystem.from_uri(job.data_dir)
    files = sorted(info.path for info in filesystem.get_file_info(fs.FileSelector(root))
                   if info.path.endswith(".parquet"))
    dataset = ds.dataset(files, format="parquet", filesystem=filesystem)
    for batch in dataset.to_batches(columns=["x", "y"], batch_size=READ_BATCH, use_threads=False):
        n = batch.num_rows
        x = _flat(batch.column("x")).reshape(n, *job.input_shape)
        y = _flat(batch.column("y")).reshape(n, job.output_size)
        yield x, (y.argmax(axis=1).astype(np.float32) if sparse else y)


def _flat(column) -> np.ndarray:
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
