"""Keras models on array columns and on image URIs with the user's own loader."""

from __future__ import annotations

import dataclasses

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from sql_dl.executor.udfs import model_udf
from sql_dl.ml._params import (ImageLoaderParams, KerasFileParams, LoaderReader, LoaderWriter,
                               with_vector_column)

__all__ = ["KerasImageFileTransformer", "KerasTransformer"]


class KerasTransformer(Transformer, KerasFileParams, DefaultParamsReadable, DefaultParamsWritable):
    """Applies a Keras model to an array column (flat, or 2-D) reshaped to the model's input;
    the output column is ``array<float>``, NULL for arrays of the wrong size."""

    @keyword_only
    def __init__(self, *, inputCol=None, outputCol=None, modelFile=None, batchSize=32):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol=None, outputCol=None, modelFile=None, batchSize=32):
        return self._set(**self._input_kwargs)

    def _transform(self, dataset):
        plan = self._tensor_plan(dataset)
        return dataset.withColumn(self.getOutputCol(), model_udf(plan)(dataset[self.getInputCol()]))


class KerasImageFileTransformer(Transformer, ImageLoaderParams, DefaultParamsReadable,
                                DefaultParamsWritable):
    """Applies a Keras model to images named by URI, loaded by the user's ``imageLoader``.

    ``imageLoader(uri) -> ndarray`` returns the model's input for one image (preprocessing
    included); it runs on the executors. Saved with the pipeline by cloudpickle: loading a
    saved pipeline runs that code, so load only pipelines you trust. Rows whose loader raises
    give NULL.
    """

    @keyword_only
    def __init__(self, *, inputCol=None, outputCol=None, modelFile=None, imageLoader=None,
                 outputMode="vector", batchSize=32):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol=None, outputCol=None, modelFile=None, imageLoader=None,
                  outputMode="vector", batchSize=32):
        return self._set(**self._input_kwargs)

    def _transform(self, dataset):
        loader = self._image_loader()
        mode = self._output_mode()
        plan = dataclasses.replace(self._tensor_plan(dataset), loader=loader)
        output = model_udf(plan)(dataset[self.getInputCol()])
        if mode == "vector":
            return with_vector_column(dataset, self.getOutputCol(), output)
        return dataset.withColumn(self.getOutputCol(), output)

    def write(self):
        return LoaderWriter(self)

    @classmethod
    def read(cls):
        return LoaderReader(cls)
