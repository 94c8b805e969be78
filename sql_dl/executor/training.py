"""Keras training inside a Spark task (`train`): the shipped model is compiled and fitted on
the training set's Parquet files, streamed in bounded batches, and sent back as bytes with
its history. The driver side, which writes the training set and runs the tasks, is
`sql_dl.driver.training`.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sql_dl.executor.devices import placed, task_device
from sql_dl.executor.loading import configure_threads, load_keras_model
from sql_dl.manifest import is_local, local_path
from sql_dl.plans import TrainingJob, TrainingResult
from sql_dl.staging import shipped_file

__all__ = ["train"]

SHUFFLE_BUFFER = 2048
READ_BATCH = 256


def train(job: TrainingJob) -> TrainingResult:
    """Runs inside a task: compiles the shipped model, streams the training set into fit."""
    import keras

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
