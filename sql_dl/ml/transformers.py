"""Spark ML transformers with sparkdl's names, on the same engine as the SQL functions."""

from __future__ import annotations

from typing import Any

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from sql_dl.errors import FunctionArgumentError
from sql_dl.executor.udfs import model_udf, top_k_udf
from sql_dl.manifest import Manifest, ModelSpec, PreprocessorSpec
from sql_dl.rules import (
    ON_ERROR, PREPROCESS_MODES, application_problem, choice_problem, default_labels,
    default_mode, positive_int_problem, size_problem,
)
from sql_dl.ml._params import OptionalParams, shipped_plan, with_vector_column

__all__ = ["DeepImageFeaturizer", "DeepImagePredictor"]


class _ImageModelParams(HasInputCol, HasOutputCol, OptionalParams):
    modelName = Param(Params._dummy(), "modelName",
                      "a keras.applications image classifier, e.g. InceptionV3",
                      typeConverter=TypeConverters.toString)
    modelFile = Param(Params._dummy(), "modelFile",
                      "a .keras/.h5 file or SavedModel directory, instead of modelName",
                      typeConverter=TypeConverters.toString)
    weights = Param(Params._dummy(), "weights",
                    "with modelName: imagenet, none, or a weights file",
                    typeConverter=TypeConverters.toString)
    imageSize = Param(Params._dummy(), "imageSize",
                      "[height, width] images are resized to; default: the model's input size",
                      typeConverter=TypeConverters.toListInt)
    preprocessMode = Param(Params._dummy(), "preprocessMode",
                           "caffe, tf, torch, scale or none; default: the application's own, "
                           "or none for a model file",
                           typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "images per model call",
                      typeConverter=TypeConverters.toInt)
    onError = Param(Params._dummy(), "onError",
                    "null: undecodable images give NULL; fail: the job fails naming the image",
                    typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(weights="imagenet", batchSize=32, onError="null")


class _ImageModelTransformer(Transformer, _ImageModelParams, DefaultParamsReadable,
                             DefaultParamsWritable):
    """Shared by the featurizer and the predictor: Params to a checked, shipped ModelPlan."""

    def _model_spec(self, **extra: Any) -> tuple[ModelSpec, Manifest]:
        name = type(self).__name__
        model_name = self._optional(self.modelName)
        model_file = self._optional(self.modelFile)
        if (model_name is None) == (model_file is None):
            raise FunctionArgumentError(
                f"{name}: give exactly one of modelName or modelFile. "
                f"Received: modelName={model_name!r}, modelFile={model_file!r}")
        if model_name is not None:
            self._checked(self.modelName, application_problem)
        size = self._checked(self.imageSize, lambda v: None if v is None else size_problem(v))
        mode = self._checked(self.preprocessMode,
                             lambda v: None if v is None else choice_problem(v, PREPROCESS_MODES))
        preprocessors = {}
        if size is not None or mode is not None:
            preprocessors["p"] = PreprocessorSpec("p", tuple(size) if size else None,
                                                  mode or default_mode(model_name))
        spec = ModelSpec(name=model_name or "modelFile", path=model_file, application=model_name,
                         weights=self.getOrDefault(self.weights) if model_name else None,
                         preprocessor="p" if preprocessors else None,
                         batch_size=self._checked(self.batchSize, positive_int_problem),
                         on_error=self._checked(self.onError, lambda v: choice_problem(v, ON_ERROR)),
                         **extra)
        return spec, Manifest(source=name, preprocessors=preprocessors, models={spec.name: spec})

    def _plan(self, dataset, **extra: Any):
        return shipped_plan(self, dataset, *self._model_spec(**extra))


class DeepImageFeaturizer(_ImageModelTransformer):
    """Turns images into feature vectors (a layer's output) for transfer learning.

    The input column holds encoded images (BINARY), paths (STRING) or Spark image structs;
    the output column holds ``pyspark.ml.linalg`` dense vectors, NULL for undecodable images.
    """

    featuresLayer = Param(Params._dummy(), "featuresLayer",
                          "the layer whose output is the features; default: the layer before "
                          "the output layer", typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, inputCol=None, outputCol=None, modelName=None, modelFile=None,
                 weights="imagenet", imageSize=None, preprocessMode=None, featuresLayer=None,
                 batchSize=32, onError="null"):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol=None, outputCol=None, modelName=None, modelFile=None,
                  weights="imagenet", imageSize=None, preprocessMode=None, featuresLayer=None,
                  batchSize=32, onError="null"):
        return self._set(**self._input_kwargs)

    def _transform(self, dataset):
        layer = self._optional(self.featuresLayer)
        plan = self._plan(dataset, features_layer=layer)
        features = model_udf(plan, features=True)(dataset[self.getInputCol()])
        return with_vector_column(dataset, self.getOutputCol(), features)


class DeepImagePredictor(_ImageModelTransformer):
    """Applies an image classifier: output vectors, or with ``decodePredictions`` the
    ``topK`` most probable classes as ``array<struct<class, description, probability>>``."""

    labels = Param(Params._dummy(), "labels",
                   "imagenet, or a text file with one label per line; default: imagenet for "
                   "modelName with imagenet weights", typeConverter=TypeConverters.toString)
    decodePredictions = Param(Params._dummy(), "decodePredictions",
                              "give the top classes instead of the output vector",
                              typeConverter=TypeConverters.toBoolean)
    topK = Param(Params._dummy(), "topK", "how many classes decodePredictions gives",
                 typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, inputCol=None, outputCol=None, modelName=None, modelFile=None,
                 weights="imagenet", imageSize=None, preprocessMode=None, labels=None,
                 decodePredictions=False, topK=5, batchSize=32, onError="null"):
        super().__init__()
        self._setDefault(decodePredictions=False, topK=5)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol=None, outputCol=None, modelName=None, modelFile=None,
                  weights="imagenet", imageSize=None, preprocessMode=None, labels=None,
                  decodePredictions=False, topK=5, batchSize=32, onError="null"):
        return self._set(**self._input_kwargs)

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        labels = self._optional(self.labels)
        if labels is None:
            labels = default_labels(self._optional(self.modelName), self.getOrDefault(self.weights))
        plan = self._plan(dataset, labels=labels)
        images = dataset[self.getInputCol()]
        if self.getOrDefault(self.decodePredictions):
            output = top_k_udf(plan)(images, F.lit(self.getOrDefault(self.topK)))
            return dataset.withColumn(self.getOutputCol(), output)
        return with_vector_column(dataset, self.getOutputCol(), model_udf(plan)(images))
