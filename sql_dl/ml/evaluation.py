"""``AccuracyEvaluator``: scores Keras classifiers' outputs with Spark ML's tuning tools."""

from __future__ import annotations

from pyspark import keyword_only
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param.shared import HasLabelCol, HasPredictionCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

__all__ = ["AccuracyEvaluator"]


class AccuracyEvaluator(Evaluator, HasPredictionCol, HasLabelCol, DefaultParamsReadable,
                        DefaultParamsWritable):
    """The share of rows whose highest score is the label's class (larger is better).

    ``predictionCol`` holds class scores (a ``pyspark.ml`` vector or a numeric array, as
    `KerasImageFileTransformer` gives); ``labelCol`` holds class indices or one-hot vectors.
    A row with NULL scores (an image that did not load) counts as wrong. Computed in one
    aggregation on the executors.
    """

    @keyword_only
    def __init__(self, *, predictionCol="prediction", labelCol="label"):
        super().__init__()
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, predictionCol="prediction", labelCol="label"):
        return self._set(**self._input_kwargs)

    def _evaluate(self, dataset) -> float:
        from pyspark.sql import functions as F
        from pyspark.sql.types import NumericType

        label = dataset.schema[self.getLabelCol()].dataType
        truth = (F.col(self.getLabelCol()).cast("int") if isinstance(label, NumericType)
                 else _argmax(dataset, self.getLabelCol()))
        hit = F.coalesce((_argmax(dataset, self.getPredictionCol()) == truth).cast("double"),
                         F.lit(0.0))
        return float(dataset.agg(F.avg(hit)).first()[0] or 0.0)

    def isLargerBetter(self) -> bool:
        return True


def _argmax(dataset, column: str):
    """The 0-based index of the largest value of a vector or array column."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F

    values = F.col(column)
    if isinstance(dataset.schema[column].dataType, VectorUDT):
        values = vector_to_array(values)
    return F.array_position(values, F.array_max(values)) - 1
