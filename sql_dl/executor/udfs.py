"""Vectorized Arrow UDF factories: models, their features and top-k, preprocessors, and the
image functions every manifest registers (the probes of the system views and keep-warm are
in `sql_dl.executor.probes`).

Each UDF is iterator-style: it gets the model from the per-worker cache once, then decodes
and runs its Arrow batches in chunks of the model's ``batch_size``. Inputs and outputs stay
Arrow arrays: model outputs and tensors go to Spark as one buffer per chunk, without a
Python object per row or per float.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, NamedTuple

import numpy as np
import pyarrow as pa

from sql_dl.errors import FunctionArgumentError, ImageDecodeError
from sql_dl.executor import prediction_cache
from sql_dl.executor.batches import chunks, column_values, float_rows, stack_valid
from sql_dl.executor.images import (decode_error, describe_source, error_text, image_info,
                                    preprocess_batch, thumbnail_url)
from sql_dl.executor.loading import get_model
from sql_dl.executor.tally import ImageTally
from sql_dl.manifest import PreprocessorSpec
from sql_dl.plans import ModelPlan
from sql_dl.rules import MAX_PIXELS, THUMBNAIL_FUNCTION, THUMBNAIL_MAX_SIZE, THUMBNAIL_SIZE

__all__ = ["FLOAT_ARRAY", "IMAGE_INFO", "PREPROCESSOR_BATCH", "TOP_K", "arrow_udf",
           "data_type", "image_error_udf", "image_info_udf", "model_udf", "preprocessor_udf",
           "tensor_udf", "thumbnail_udf", "top_k_udf"]

FLOAT_ARRAY = "array<float>"
TOP_K = "array<struct<class:string,description:string,probability:float>>"
_TOP_K_ARROW = pa.list_(pa.struct([("class", pa.string()), ("description", pa.string()),
                                   ("probability", pa.float32())]))
IMAGE_INFO = "struct<format:string,mode:string,width:int,height:int,frames:int>"
_IMAGE_INFO_ARROW = pa.struct([("format", pa.string()), ("mode", pa.string()),
                               ("width", pa.int32()), ("height", pa.int32()),
                               ("frames", pa.int32())])
PREPROCESSOR_BATCH = 32


def arrow_udf(function, return_type: str):
    """An iterator Arrow UDF (the kind comes from ``function``'s type hints), its return type
    a DataType already (`data_type`): PySpark parses a type's text in the JVM, and the
    plugin's driver-side call (`sql_dl.driver.plugin`) has none."""
    from pyspark.sql import functions  # lazy: a task unpickling a UDF needs no SQL functions

    return functions.arrow_udf(function, data_type(return_type))


_SIMPLE_TYPES = {"string": "StringType", "float": "FloatType", "double": "DoubleType",
                 "int": "IntegerType", "integer": "IntegerType", "bigint": "LongType",
                 "long": "LongType", "binary": "BinaryType", "boolean": "BooleanType"}


def data_type(ddl):
    """The PySpark DataType of a type's text in the forms sql_dl's UDFs return
    (``array<float>``, ``struct<a:string,b:int>``, the simple types of `_SIMPLE_TYPES` and
    their nesting, and a top-level ``name type, ...`` list as a struct), read without a
    JVM; any other text, or a DataType, is returned as it is, for PySpark to parse."""
    if not isinstance(ddl, str):
        return ddl
    import re  # lazy: only here

    from pyspark.sql import types  # lazy: a task unpickling a UDF needs no type parsing

    tokens = re.findall(r"`[^`]*`|[A-Za-z_][A-Za-z_0-9]*|[<>,:]", ddl)
    if "".join(tokens).replace(" ", "") != re.sub(r"\s+", "", ddl):
        return ddl  # something this reader does not know: PySpark parses it
    position = 0

    def take() -> str:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def field() -> "types.StructField":
        name = take().strip("`")
        if tokens[position] == ":":
            take()
        return types.StructField(name, one())

    def one() -> "types.DataType":
        word = take().lower()
        if word == "array":
            take()  # <
            element = one()
            take()  # >
            return types.ArrayType(element)
        if word == "struct":
            take()  # <
            fields = [field()]
            while take() == ",":
                fields.append(field())
            return types.StructType(fields)
        return getattr(types, _SIMPLE_TYPES[word])()

    try:
        if len(tokens) > 1 and tokens[1] != "<" and tokens[0].lower() not in _SIMPLE_TYPES:
            fields = [field()]  # a top-level "name type, ..." list
            while position < len(tokens) and take() == ",":
                fields.append(field())
            parsed = types.StructType(fields)
        else:
            parsed = one()
    except (KeyError, IndexError):
        return ddl
    return parsed if position == len(tokens) else ddl


def model_udf(plan: ModelPlan, features: bool = False, counter=None):
    """``<model>(x)`` (or ``<model>_features(x)``) as an Arrow UDF returning array<float>.

    ``counter``, a Spark accumulator, gets the number of images that could not be decoded.
    """

    def predict(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        for outputs, ok, _ in _run(plan, ((x, None) for x in batches), features, counter):
            yield float_rows(outputs, ok)

    return arrow_udf(predict, FLOAT_ARRAY)


def top_k_udf(plan: ModelPlan, counter=None):
    """``<model>_top_k(x, k)``: the k most probable classes, most probable first."""
    labels = plan.labels or tuple((str(i), str(i)) for i in range(plan.output_size))

    def top_k(batches: Iterator[tuple[pa.Array, pa.Array]]) -> Iterator[pa.Array]:
        for outputs, ok, ks in _run(plan, batches, False, counter):
            rows: list[Any] = [None] * len(ok)
            for i, p in zip(np.flatnonzero(ok), outputs):
                rows[i] = _top_k_row(plan.name, p, ks[i], labels)
            yield pa.array(rows, _TOP_K_ARROW)

    return arrow_udf(top_k, TOP_K)


def preprocessor_udf(spec: PreprocessorSpec, counter=None):
    """``<preprocessor>(x)``: the flattened float32 tensor a model would receive."""
    return _tensor_udf(lambda chunk: preprocess_batch(chunk, spec, "null"),
                       f"preprocessor {spec.name!r}", counter, PREPROCESSOR_BATCH)


def tensor_udf(plan: ModelPlan):
    """``x -> array<float>``: the input a tensor model gets for ``x`` (through the plan's
    loader, if any), flattened; NULL where it cannot be made."""
    return _tensor_udf(lambda chunk: _inputs(plan, chunk), f"model {plan.name!r}", None,
                       plan.batch_size)


def _tensor_udf(convert, function: str, counter, batch_size: int):
    """An Arrow UDF applying ``convert(values) -> (tensors, ok)`` to chunks of its input."""

    def tensors(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        tally = ImageTally(function, counter)

        def outputs():
            for batch in batches:
                for chunk in chunks(column_values(batch), batch_size):
                    arrays, ok = convert(chunk)
                    tally.add(chunk, ok)
                    yield float_rows(arrays, ok)

        yield from _one_ahead(outputs(), tally.close)

    return arrow_udf(tensors, FLOAT_ARRAY)


def image_error_udf(max_pixels: int = MAX_PIXELS):
    """``x -> string``: why Keras's load_img cannot decode the image; NULL if it can (or if
    ``x`` is NULL)."""

    def image_error(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        for batch in batches:
            yield pa.array([decode_error(v, max_pixels) for v in column_values(batch)], pa.string())

    return arrow_udf(image_error, "string")


def thumbnail_udf(max_pixels: int = MAX_PIXELS):
    """``(x [, size]) -> string``: the image as a ``data:image/...;base64`` URL, its longest
    side at most ``size`` pixels; NULL where it cannot be decoded (or ``x`` or ``size`` is
    NULL)."""

    # Spark passes an array per batch for thumbnail(x), a tuple for thumbnail(x, size)
    def thumbnail(batches: Iterator[tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        for batch in batches:
            images, sizes = batch if isinstance(batch, tuple) else (batch, None)
            sizes = sizes.to_pylist() if sizes is not None else [THUMBNAIL_SIZE] * len(images)
            yield pa.array([None if size is None else thumbnail_url(value, _size(size),
                                                                    max_pixels)
                            for value, size in zip(column_values(images), sizes)], pa.string())

    return arrow_udf(thumbnail, "string")


def _size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not (
            1 <= size <= THUMBNAIL_MAX_SIZE):
        received = repr(size) if isinstance(size, str) else size  # 12.5, not Decimal('12.5')
        raise FunctionArgumentError(
            f"{THUMBNAIL_FUNCTION}(image, size): size must be an integer from 1 to "
            f"{THUMBNAIL_MAX_SIZE} (pixels on the longest side). Received: size={received}")
    return size


def image_info_udf():
    """``x -> struct<format, mode, width, height, frames>`` from the image's header."""

    def info(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        for batch in batches:
            yield pa.array([image_info(v) for v in column_values(batch)], _IMAGE_INFO_ARROW)

    return arrow_udf(info, IMAGE_INFO)


def _run(plan: ModelPlan, batches: Iterator[tuple[pa.Array, pa.Array | None]], features: bool,
         counter=None):
    """Yields ``(outputs, ok, ks)`` per chunk of ``batch_size`` rows of ``(x, k)`` batches.

    A thread looks the next chunk up in the prediction cache and decodes what it lacks while
    the model runs on this one: PIL and TensorFlow both release the GIL, so the two overlap.
    """
    tally = ImageTally(f"model {plan.name!r}", counter)
    scorer = _Scorer(plan, plan.features_layer if features else None, tally)
    with ThreadPoolExecutor(1, thread_name_prefix="sql_dl-decode") as decoder:
        pending = _one_ahead((chunk, decoder.submit(scorer.prepare, chunk), ks)
                             for chunk, ks in _chunked(batches, plan.batch_size))
        yield from _one_ahead((scorer.finish(*p) for p in pending), tally.close)


class _Prepared(NamedTuple):
    keys: list[bytes | None] | None  # prediction cache keys; None without the cache
    found: dict[int, np.ndarray]  # row -> its cached output
    missing: np.ndarray  # the rows not found, in order
    inputs: np.ndarray  # the decoded inputs of the missing rows that decode
    ok: np.ndarray  # which missing rows decode


class _Scorer:
    """A model's outputs (or a layer's) for chunks of inputs: from the prediction cache
    where it has them, else decoded and scored, and then cached."""

    def __init__(self, plan: ModelPlan, layer: str | None, tally: ImageTally):
        self.plan = plan
        self.layer = layer
        self.tally = tally
        self.width = plan.features_size if layer else plan.output_size
        self.cache = prediction_cache.for_plan(plan)
        self.model_key = f"{plan.cache_key}/{layer or 'output'}"
        self.name = f"{plan.name}_features" if layer else plan.name

    def prepare(self, chunk: list[Any]) -> _Prepared:
        """Looks the chunk up in the cache, and decodes the rest."""
        keys, found = None, {}
        if self.cache is not None:
            keys = self.cache.keys(self.model_key, chunk)
            outputs = self.cache.get(keys, self.width)
            found = {i: outputs[k] for i, k in enumerate(keys) if k in outputs}
            self.cache.touch(self.model_key, self.name, list(outputs))
        missing = np.array([i for i in range(len(chunk)) if i not in found], dtype=np.int64)
        if not len(missing):  # nothing to decode (nor to import for it)
            return _Prepared(keys, found, missing, np.zeros((0, *self.plan.input_shape)),
                             np.zeros(0, dtype=bool))
        inputs, ok = _inputs(self.plan, [chunk[i] for i in missing])
        return _Prepared(keys, found, missing, inputs, ok)

    def finish(self, chunk: list[Any], preparing: Future, ks):
        """``(outputs, ok, ks)`` of a chunk: outputs of the rows where ``ok``."""
        prepared = preparing.result()
        outputs = np.zeros((len(chunk), self.width), dtype=np.float32)
        ok = np.zeros(len(chunk), dtype=bool)
        for i, output in prepared.found.items():
            outputs[i], ok[i] = output, True
        if len(prepared.inputs):
            scored = prepared.missing[prepared.ok]
            outputs[scored] = get_model(self.plan).predict(prepared.inputs, self.layer)
            ok[scored] = True
            if prepared.keys is not None:
                self.cache.put(self.model_key, self.name, [
                    (prepared.keys[i], outputs[i]) for i in scored if prepared.keys[i] is not None])
        self.tally.add(chunk, ok)
        self.tally.scored(len(prepared.inputs))
        self.tally.cached(len(prepared.found))
        return outputs[ok], ok, ks


def _one_ahead(items: Iterator[Any], before_last=lambda: None) -> Iterator[Any]:
    """Yields each item once the next has been made (so its work has started), and calls
    ``before_last`` before the last: Spark stops reading a task's outputs once it has one
    per input row, so code after the last yield may never run."""
    previous = nothing = object()
    for item in items:
        if previous is not nothing:
            yield previous
        previous = item
    before_last()
    if previous is not nothing:
        yield previous


def _chunked(batches: Iterator[tuple[pa.Array, pa.Array | None]], size: int):
    for batch, k in batches:
        ks = chunks(k.to_pylist(), size) if k is not None else None
        for chunk in chunks(column_values(batch), size):
            yield chunk, next(ks) if ks is not None else None


def _inputs(plan: ModelPlan, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    if plan.input == "image":
        return preprocess_batch(values, plan.preprocessor, plan.on_error)
    return stack_valid(values, lambda value: _tensor(plan, value), plan.input_shape)


def _tensor(plan: ModelPlan, value: Any) -> np.ndarray | None:
    """One input tensor: an array as given, or what the plan's loader makes of a URI."""
    try:
        if plan.loader is not None:
            array = np.asarray(plan.loader(value), dtype=np.float32)
        else:
            array = value
    except Exception as e:  # a user's loader may raise anything
        if plan.on_error == "fail":
            raise ImageDecodeError(f"model {plan.name!r}: the image loader failed: "
                                   f"{error_text(e)}. Fix the loader or the file, or use "
                                   f"onError='null'. Received: {describe_source(value)}") from e
        return None
    size = int(np.prod(plan.input_shape))
    if array.size != size:
        if plan.on_error == "fail":
            raise ImageDecodeError(
                f"model {plan.name!r}: a tensor of {array.size} values does not fit the model's "
                f"input {plan.input_shape} ({size} values); give arrays of {size} values. "
                f"Received: shape={array.shape}")
        return None
    return array.reshape(plan.input_shape)


def _top_k_row(model: str, probabilities: np.ndarray, k: Any, labels) -> list[dict] | None:
    if k is None:
        return None
    if k < 0:
        raise FunctionArgumentError(f"{model}_top_k(x, k): k must be 0 or more (0 gives an "
                                    f"empty array). Received: k={k}")
    order = np.argsort(-probabilities, kind="stable")[:int(k)]
    return [{"class": labels[i][0], "description": labels[i][1],
             "probability": float(probabilities[i])} for i in order]
