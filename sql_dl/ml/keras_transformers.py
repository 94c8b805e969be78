"""Keras models on array columns and on image URIs with the user's own loader."""

from __future__ import annotations

import dataclasses

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import (DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable,
                             DefaultParamsWriter)

from sql_dl.manifest import Manifest, ModelSpec
from sql_dl.ml.transformers import _OptionalParams, shipped_plan, with_vector_column

__all__ = ["KerasImageFileTransformer", "KerasTransformer"]

OUTPUT_MODES = ("vector", "array")


class _KerasFileParams(HasInputCol, HasOutputCol, _OptionalParams):
    modelFile = Param(Params._dummy(), "modelFile", "a .keras/.h5 file or SavedModel directory",
                      typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "rows per model call",
                      typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(batchSize=32)

    def _tensor_plan(self, dataset, on_error: str = "null"):
        name = type(self).__name__
        if not self.isDefined(self.modelFile):
            raise ValueError(f"{name}: modelFile is required. Received: modelFile=None")
        spec = ModelSpec(name="modelFile", path=self.getOrDefault(self.modelFile), input="tensor",
                         batch_size=self.getOrDefault(self.batchSize), on_error=on_error)
        return shipped_plan(self, dataset, spec, Manifest(source=name, models={spec.name: spec}))


class KerasTransformer(Transformer, _KerasFileParams, DefaultParamsReadable, DefaultParamsWritable):
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
        from sql_dl.udfs import model_udf

        plan = self._tensor_plan(dataset)
        return dataset.withColumn(self.getOutputCol(), model_udf(plan)(dataset[self.getInputCol()]))


class _ImageLoaderParams(_KerasFileParams):
    """The Params of models that read images through the user's ``imageLoader``."""

    imageLoader = Param(Params._dummy(), "imageLoader",
                        "a Python function uri -> ndarray giving the model's input")
    outputMode = Param(Params._dummy(), "outputMode", "vector (pyspark.ml dense vectors) or array",
                       typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(outputMode="vector")

    def _image_loader(self):
        """The ``imageLoader`` Param, checked to be a function."""
        loader = self._optional(self.imageLoader)
        if not callable(loader):
            raise ValueError(f"{type(self).__name__}: imageLoader must be a function uri -> "
                             f"ndarray. Received: imageLoader={loader!r}")
        return loader


class KerasImageFileTransformer(Transformer, _ImageLoaderParams, DefaultParamsReadable,
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
        from sql_dl.udfs import model_udf

        loader = self._image_loader()
        mode = self.getOrDefault(self.outputMode)
        if mode not in OUTPUT_MODES:
            raise ValueError(f"{type(self).__name__}: outputMode must be one of "
                             f"{', '.join(OUTPUT_MODES)}. Received: outputMode={mode!r}")
        plan = dataclasses.replace(self._tensor_plan(dataset), loader=loader)
        output = model_udf(plan)(dataset[self.getInputCol()])
        if mode == "vector":
            return with_vector_column(dataset, self.getOutputCol(), output)
        return dataset.withColumn(self.getOutputCol(), output)

    def write(self):
        return _LoaderWriter(self)

    @classmethod
    def read(cls):
        return _LoaderReader(cls)


_LOADER_DIR = "imageLoader"


class _LoaderWriter(DefaultParamsWriter):
    """Saves the Params as JSON and ``imageLoader`` with cloudpickle beside them."""

    def saveImpl(self, path: str) -> None:
        from pyspark import cloudpickle

        params = {p.name: v for p, v in self.instance._paramMap.items() if p.name != _LOADER_DIR}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, paramMap=params)
        loader = self.instance._optional(self.instance.imageLoader)
        self.sc.parallelize([cloudpickle.dumps(loader)], 1).saveAsPickleFile(f"{path}/{_LOADER_DIR}")


class _LoaderReader(DefaultParamsReader):
    def load(self, path: str):
        from pyspark import cloudpickle

        instance = super().load(path)
        loader = cloudpickle.loads(self.sc.pickleFile(f"{path}/{_LOADER_DIR}").first())
        if loader is not None:
            instance._set(imageLoader=loader)
        return instance
