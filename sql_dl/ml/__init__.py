"""Spark ML API with sparkdl's names, on the same engine as sql_dl's SQL functions.

``read_images`` loads image files; ``DeepImageFeaturizer`` and ``DeepImagePredictor`` are
``pyspark.ml`` Transformers that save and load with their Pipeline.
"""

from __future__ import annotations

from sql_dl.ml.images import read_images
from sql_dl.ml.transformers import DeepImageFeaturizer, DeepImagePredictor

__all__ = ["DeepImageFeaturizer", "DeepImagePredictor", "read_images"]
