"""Spark ML API with sparkdl's names, on the same engine as sql_dl's SQL functions.

``read_images`` loads image files; the transformers are ``pyspark.ml`` Transformers that
save and load with their Pipeline; ``KerasImageFileEstimator`` trains in Spark tasks (with
``CrossValidator``); ``register_keras_image_udf`` deploys a model to SQL.
"""

from __future__ import annotations

from sql_dl.ml.estimator import KerasImageFileEstimator
from sql_dl.ml.evaluation import AccuracyEvaluator
from sql_dl.ml.images import read_images
from sql_dl.ml.keras_transformers import KerasImageFileTransformer, KerasTransformer
from sql_dl.ml.tf_transformer import TFTransformer
from sql_dl.ml.transformers import DeepImageFeaturizer, DeepImagePredictor
from sql_dl.ml.udf import register_keras_image_udf, registerKerasImageUDF

__all__ = [
    "AccuracyEvaluator",
    "DeepImageFeaturizer",
    "DeepImagePredictor",
    "KerasImageFileEstimator",
    "KerasImageFileTransformer",
    "KerasTransformer",
    "TFTransformer",
    "read_images",
    "registerKerasImageUDF",
    "register_keras_image_udf",
]
