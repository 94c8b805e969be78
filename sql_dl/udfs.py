"""Vectorized pandas UDF factories: models, their features and top-k, and preprocessors.

Each UDF is iterator-style: it gets the model from the per-worker cache once, then decodes
and runs its Arrow batches in chunks of the model's ``batch_size``.
"""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import numpy as np
import pandas as pd

from sql_dl.errors import ImageDecodeError
from sql_dl.images import can_decode, describe_source, preprocess_batch
from sql_dl.manifest import PreprocessorSpec
from sql_dl.models import ModelPlan

__all__ = ["FLOAT_ARRAY", "TOP_K", "model_udf", "preprocessor_udf", "top_k_udf"]

FLOAT_ARRAY = "array<float>"
TOP_K = "array<struct<class:string,description:string,probability:float>>"
PREPROCESSOR_BATCH = 32


def model_udf(plan: ModelPlan, features: bool = False):
    """``<model>(x)`` (or ``<model>_features(x)``) as a pandas UDF returning array<float>."""
    from pyspark.sql.functions import pandas_udf

    def predict(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for outputs, ok, _ in _run(plan, ((x, None) for x in batches), features):
            yield _rows(list(outputs), ok)

    return pandas_udf(predict, FLOAT_ARRAY)


def top_k_udf(plan: ModelPlan):
    """``<model>_top_k(x, k)``: the k most probable classes, most probable first."""
    from pyspark.sql.functions import pandas_udf

    labels = plan.labels or tuple((str(i), str(i)) for i in range(plan.output_size))

    def top_k(batches: Iterator[Tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        for outputs, ok, ks in _run(plan, batches, False):
            yield _rows([_top_k_row(p, k, labels) for p, k in zip(outputs, ks[ok])], ok)

    return pandas_udf(top_k, TOP_K)


def preprocessor_udf(spec: PreprocessorSpec):
    """``<preprocessor>(x)``: the flattened float32 tensor a model would receive."""
    from pyspark.sql.functions import pandas_udf

    def preprocess(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for batch in batches:
            for chunk in _chunks(_values(batch), PREPROCESSOR_BATCH):
                tensors, ok = preprocess_batch(chunk, spec, "null")
                yield _rows([t.reshape(-1) for t in tensors], ok)

    return pandas_udf(preprocess, FLOAT_ARRAY)


def decodable_udf():
    """``x -> boolean``: whether Keras's load_img can decode the image."""
    from pyspark.sql.functions import pandas_udf

    def decodable(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for batch in batches:
            yield pd.Series([v is not None and can_decode(v) for v in _values(batch)])

    return pandas_udf(decodable, "boolean")


def warm_up_udf(plans: list[ModelPlan]):
    """``id -> id``: loads every model in this worker and runs one batch through each."""
    from pyspark.sql.functions import pandas_udf

    def warm_up(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        from sql_dl.model_cache import get_model

        for plan in plans:
            model = get_model(plan)
            batch = np.zeros((plan.batch_size, *plan.input_shape), dtype=np.float32)
            model.predict(batch, plan.batch_size)
            model.predict(batch, plan.batch_size, plan.features_layer)
        yield from batches

    return pandas_udf(warm_up, "long")


def _run(plan: ModelPlan, batches: Iterator[tuple[Any, pd.Series | None]], features: bool):
    """Yields ``(outputs, ok, ks)`` per chunk of ``batch_size`` rows of ``(x, k)`` batches."""
    from sql_dl.model_cache import get_model

    model = get_model(plan)
    for batch, k in batches:
        ks = _chunks(k.to_numpy(), plan.batch_size) if k is not None else None
        for chunk in _chunks(_values(batch), plan.batch_size):
            inputs, ok = _inputs(plan, chunk)
            layer = plan.features_layer if features else None
            outputs = model.predict(inputs, plan.batch_size, layer) if len(inputs) else np.zeros((0, 0))
            yield outputs, ok, next(ks) if ks is not None else None


def _chunks(values, size: int):
    return (values[start:start + size] for start in range(0, len(values), size))


def _values(batch: pd.Series | pd.DataFrame) -> list[Any]:
    """Python values of one Arrow batch: bytes, str, image-struct dicts or arrays; None for NULL."""
    if isinstance(batch, pd.DataFrame):
        return [None if _is_null(row.get("data")) else row for row in batch.to_dict("records")]
    return [None if _is_null(v) else v for v in batch.tolist()]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _inputs(plan: ModelPlan, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    if plan.input == "image":
        return preprocess_batch(values, plan.preprocessor, plan.on_error)
    arrays, ok = [], np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        array = None if value is None else _tensor(plan, value)
        if array is not None:
            arrays.append(array)
            ok[i] = True
    if not arrays:
        return np.zeros((0, *plan.input_shape), dtype=np.float32), ok
    return np.stack(arrays), ok


def _tensor(plan: ModelPlan, value: Any) -> np.ndarray | None:
    """One input tensor: an array as given, or what the plan's loader makes of a URI."""
    try:
        if plan.loader is not None:
            array = np.asarray(plan.loader(value), dtype=np.float32)
        else:
            array = np.asarray(np.stack(value) if value.dtype == object else value, dtype=np.float32)
    except Exception as e:  # a user's loader may raise anything
        if plan.on_error == "fail":
            raise ImageDecodeError(f"model {plan.name!r}: the image loader failed on "
                                   f"{describe_source(value)}: {type(e).__name__}: {e}") from e
        return None
    size = int(np.prod(plan.input_shape))
    if array.size != size:
        if plan.on_error == "fail":
            raise ImageDecodeError(
                f"model {plan.name!r}: a tensor of {array.size} values (shape {array.shape}) "
                f"does not fit the model's input {plan.input_shape} ({size} values)")
        return None
    return array.reshape(plan.input_shape)


def _top_k_row(probabilities: np.ndarray, k: Any, labels) -> list[dict] | None:
    if _is_null(k):
        return None
    order = np.argsort(-probabilities, kind="stable")[:max(0, int(k))]
    return [{"class": labels[i][0], "description": labels[i][1],
             "probability": float(probabilities[i])} for i in order]


def _rows(results: list[Any], ok: np.ndarray) -> pd.Series:
    """Places one result per decodable row and None elsewhere."""
    rows: list[Any] = [None] * len(ok)
    for i, result in zip(np.flatnonzero(ok), results):
        rows[i] = result
    return pd.Series(rows, dtype=object)
