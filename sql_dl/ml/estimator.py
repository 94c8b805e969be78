"""``KerasImageFileEstimator``: trains a Keras image model in Spark tasks, one per parameter map.

Works with Spark ML's own tuning (``CrossValidator``, ``TrainValidationSplit``): ``fitMultiple``
writes the decoded training set once as Parquet, then trains every parameter map in its own
task, in parallel; the result of each is a `KerasImageFileTransformer`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from pathlib import Path

from pyspark import keyword_only
from pyspark.ml import Estimator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasLabelCol, HasSeed
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from sql_dl.driver.training import (label_column, remove, run_jobs, staging_dir,
                                    write_training_set)
from sql_dl.errors import FunctionArgumentError
from sql_dl.executor.udfs import tensor_udf
from sql_dl.ml._params import ImageLoaderParams, LoaderReader, LoaderWriter
from sql_dl.ml.keras_transformers import KerasImageFileTransformer
from sql_dl.paths import cache_dir
from sql_dl.plans import TrainingJob

__all__ = ["KerasImageFileEstimator"]

logger = logging.getLogger(__name__)

_DATA_PARAMS = ("inputCol", "labelCol", "imageLoader", "modelFile", "stagingDir")


class KerasImageFileEstimator(Estimator, ImageLoaderParams, HasLabelCol, HasSeed,
                              DefaultParamsReadable, DefaultParamsWritable):
    """Fits a Keras model on images named by URI, loaded by ``imageLoader``, in Spark tasks.

    ``modelFile`` is the model to train (saved with ``model.save``; it is not modified).
    Labels are class indices (a numeric column) or one-hot vectors (a ``pyspark.ml`` vector
    or numeric array column) matching the model's outputs; ``fit`` checks them first.
    ``kerasFitParams`` go to ``model.fit`` (``epochs``, ``verbose``, ...), except
    ``batch_size`` (rows per step) and ``learning_rate`` (given to the optimizer).
    ``batchSize`` is how many images ``imageLoader`` decodes per chunk while the training set
    is written.

    The decoded training set is written once as Parquet under ``stagingDir`` (default: the
    driver's temporary directory on a local master, the warehouse directory on a cluster,
    where it must be storage the executors can read) and deleted after the fit; it never reaches the driver. Each parameter map trains in one task; the trained
    models are written under ``modelDir`` (default ``$SQL_DL_CACHE/trained``) and returned as
    `KerasImageFileTransformer` models with the same input, output and loader.

    Given ``seed`` (default 0), a fit is reproducible when each task has one core
    (``spark.task.cpus=1``, the default) and the dataset's partitioning does not change:
    TensorFlow's multi-threaded kernels can otherwise add floating-point sums in another order.
    """

    kerasOptimizer = Param(Params._dummy(), "kerasOptimizer",
                           "a Keras optimizer name, e.g. adam or sgd",
                           typeConverter=TypeConverters.toString)
    kerasLoss = Param(Params._dummy(), "kerasLoss", "a Keras loss name",
                      typeConverter=TypeConverters.toString)
    kerasFitParams = Param(Params._dummy(), "kerasFitParams",
                           "model.fit arguments, plus batch_size and learning_rate")
    stagingDir = Param(Params._dummy(), "stagingDir",
                       "where the training set is written; executors must read it",
                       typeConverter=TypeConverters.toString)
    modelDir = Param(Params._dummy(), "modelDir", "where trained models are written",
                     typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, inputCol=None, outputCol=None, labelCol=None, modelFile=None,
                 imageLoader=None, kerasOptimizer="adam", kerasLoss="categorical_crossentropy",
                 kerasFitParams=None, outputMode="vector", stagingDir=None, modelDir=None, seed=0,
                 batchSize=32):
        super().__init__()
        self._setDefault(kerasOptimizer="adam", kerasLoss="categorical_crossentropy",
                         kerasFitParams={}, seed=0)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol=None, outputCol=None, labelCol=None, modelFile=None,
                  imageLoader=None, kerasOptimizer="adam", kerasLoss="categorical_crossentropy",
                  kerasFitParams=None, outputMode="vector", stagingDir=None, modelDir=None, seed=0,
                  batchSize=32):
        return self._set(**self._input_kwargs)

    def _fit(self, dataset):
        return self._fit_all(dataset, [self])[0]

    def fitMultiple(self, dataset, paramMaps):
        """Trains every parameter map, in parallel Spark tasks, when the first model is asked
        for; the returned iterator is thread-safe, as ``CrossValidator`` needs."""
        return _ModelIterator(lambda: self._fit_all(dataset, [self.copy(m) for m in paramMaps]))

    def _fit_all(self, dataset, estimators: list[KerasImageFileEstimator]) -> list:
        spark = dataset.sparkSession
        groups: dict[tuple, list[int]] = {}
        for i, estimator in enumerate(estimators):
            estimator._check()
            key = tuple(id(v) if k == "imageLoader" else v
                        for k, v in ((n, estimator._optional(n)) for n in _DATA_PARAMS))
            groups.setdefault(key, []).append(i)
        jobs, data_dirs = [], []
        try:
            for indices in groups.values():
                data_dir, plan, rows = estimators[indices[0]]._training_set(dataset)
                data_dirs.append(data_dir)
                jobs += [estimators[i]._job(i, data_dir, plan, rows) for i in indices]
            results = run_jobs(spark, jobs)
        finally:
            for data_dir in data_dirs:
                remove(data_dir, spark)
        return [estimators[r.index]._model(r) for r in results]

    def _check(self) -> None:
        import keras

        name = type(self).__name__
        for required in ("inputCol", "outputCol", "labelCol", "modelFile"):
            self._checked(required, lambda v: "is required" if v is None else None)
        self._image_loader()
        self._output_mode()
        self._checked("kerasFitParams", lambda v: None if isinstance(v, dict)
                      else "must be a dict of model.fit arguments")
        for param, check in (("kerasOptimizer", keras.optimizers.get),
                             ("kerasLoss", keras.losses.get)):
            try:
                check(self._optional(param))
            except ValueError as e:
                raise FunctionArgumentError(
                    f"{name}: {param} is not a Keras name: {e}. "
                    f"Received: {param}={self._optional(param)!r}") from e

    def _training_set(self, dataset):
        """Decodes the images and labels once, on the executors, into Parquet files."""
        name = type(self).__name__
        plan = dataclasses.replace(self._tensor_plan(dataset), loader=self._image_loader())
        labels = label_column(dataset, self.getLabelCol(), plan.output_size, name)
        data_dir = staging_dir(dataset.sparkSession, self._optional("stagingDir"))
        frame = dataset.select(tensor_udf(plan)(dataset[self.getInputCol()]).alias("x"),
                               labels.alias("y"))
        rows = write_training_set(frame, data_dir)
        if rows == 0:
            raise FunctionArgumentError(
                f"{name}: no training rows: every image failed to load or had a "
                "NULL label")
        logger.info("%s: wrote %d training rows to %s", name, rows, data_dir)
        return data_dir, plan, rows

    def _job(self, index: int, data_dir: str, plan, rows: int):
        return TrainingJob(index=index, model_file=plan.file, staged_name=plan.staged_name,
                           data_dir=data_dir, input_shape=plan.input_shape,
                           output_size=plan.output_size,
                           optimizer=self._optional("kerasOptimizer"),
                           loss=self._optional("kerasLoss"),
                           fit_params=self._optional("kerasFitParams"), seed=self.getSeed(),
                           rows=rows)

    def _model(self, result) -> KerasImageFileTransformer:
        directory = Path(self._optional("modelDir") or cache_dir() / "trained")
        directory.mkdir(parents=True, exist_ok=True)
        stem = Path(self._optional("modelFile")).stem
        path = directory / f"{stem}-{uuid.uuid4().hex[:12]}.keras"
        path.write_bytes(result.model)
        model = KerasImageFileTransformer(
            inputCol=self.getInputCol(), outputCol=self.getOutputCol(), modelFile=str(path),
            imageLoader=self._optional("imageLoader"), outputMode=self._optional("outputMode"))
        model.history = result.history
        model.trainedBy = result.pid
        return model

    def write(self):
        return LoaderWriter(self)

    @classmethod
    def read(cls):
        return LoaderReader(cls)


class _ModelIterator:
    """Yields ``(index, model)`` once ``fit_all`` has run; safe to share between threads."""

    def __init__(self, fit_all):
        self.fit_all = fit_all
        self.lock = threading.Lock()
        self.models: list | None = None
        self.next_index = 0

    def __iter__(self):
        return self

    def __next__(self):
        with self.lock:
            if self.models is None:
                self.models = self.fit_all()
            if self.next_index >= len(self.models):
                raise StopIteration
            index = self.next_index
            self.next_index += 1
            return index, self.models[index]
