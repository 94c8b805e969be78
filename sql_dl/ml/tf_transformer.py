"""``TFTransformer``: a TensorFlow SavedModel signature applied to array columns."""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from sql_dl.errors import FunctionArgumentError
from sql_dl.executor.batches import chunks, column_values, float_rows, stack_valid
from sql_dl.executor.devices import placed, task_device
from sql_dl.executor.loading import get_signature
from sql_dl.spark.backends import backend_for

__all__ = ["TFTransformer"]


class TFTransformer(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """Runs a SavedModel signature on array columns, in batches, loaded once per worker.

    ``inputMapping`` maps input columns to the signature's input names, ``outputMapping``
    the signature's output names to output columns (``array<float>``, flattened per row).
    Arrays are reshaped to each input's shape; a row with a NULL input gives NULL outputs.
    """

    modelDir = Param(Params._dummy(), "modelDir", "a TensorFlow SavedModel directory",
                     typeConverter=TypeConverters.toString)
    inputMapping = Param(Params._dummy(), "inputMapping", "{input column: signature input name}")
    outputMapping = Param(Params._dummy(), "outputMapping", "{signature output name: output column}")
    signature = Param(Params._dummy(), "signature", "the signature to run",
                      typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "rows per call",
                      typeConverter=TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, modelDir=None, inputMapping=None, outputMapping=None,
                 signature="serving_default", batchSize=32):
        super().__init__()
        self._setDefault(signature="serving_default", batchSize=32)
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, modelDir=None, inputMapping=None, outputMapping=None,
                  signature="serving_default", batchSize=32):
        return self._set(**self._input_kwargs)

    def _transform(self, dataset):
        from pyspark.sql import functions as F
        from pyspark.sql.functions import arrow_udf

        model_dir = self.getOrDefault(self.modelDir)
        signature = self.getOrDefault(self.signature)
        inputs, outputs = self.getOrDefault(self.inputMapping), self.getOrDefault(self.outputMapping)
        shapes = _check_signature(model_dir, signature, inputs, outputs)
        name = backend_for(dataset.sparkSession).ship(model_dir)
        input_names = list(inputs.values())
        output_names = list(outputs)
        batch_size = self.getOrDefault(self.batchSize)
        schema = ", ".join(f"`o{i}` array<float>" for i in range(len(output_names)))

        def run(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
            function = get_signature(model_dir, name, signature)
            device = task_device()
            for batch in batches:
                columns = [column_values(c) for c in ([batch] if isinstance(batch, pa.Array)
                                                      else batch)]
                for chunk in zip(*(chunks(c, batch_size) for c in columns)):
                    with placed(device):
                        result = _run_chunk(function, chunk, input_names, output_names, shapes)
                    yield result

        udf = arrow_udf(run, schema)
        struct = "__sql_dl_tf_outputs"
        result = dataset.withColumn(struct, udf(*[dataset[c] for c in inputs]))
        for i, column in enumerate(outputs.values()):
            result = result.withColumn(column, F.col(f"{struct}.o{i}"))
        return result.drop(struct)


def _check_signature(model_dir, signature, inputs, outputs) -> dict[str, tuple]:
    """Checks the mappings against the signature on the driver; returns the input shapes."""
    import tensorflow as tf

    if not isinstance(inputs, dict) or not inputs or not isinstance(outputs, dict) or not outputs:
        raise FunctionArgumentError(
            "TFTransformer: inputMapping and outputMapping must be non-empty dicts. "
            f"Received: inputMapping={inputs!r}, outputMapping={outputs!r}")
    loaded = tf.saved_model.load(model_dir)
    if signature not in loaded.signatures:
        raise FunctionArgumentError(
            f"TFTransformer: {model_dir} has no signature {signature!r} (signatures: "
            f"{', '.join(loaded.signatures)}). Received: signature={signature!r}")
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]
    for kind, given, known in (("input", inputs.values(), specs), ("output", outputs,
                                                                     function.structured_outputs)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise FunctionArgumentError(
                f"TFTransformer: signature {signature!r} has no {kind} "
                f"{', '.join(unknown)} ({kind}s: {', '.join(sorted(known))})")
    return {name: tuple(d if d is not None else -1 for d in spec.shape[1:])
            for name, spec in specs.items()}


def _run_chunk(function, chunk, input_names, output_names, shapes) -> pa.Array:
    """One chunk through the signature: a row with a NULL input gives NULL outputs."""
    import tensorflow as tf

    rows = [None if any(value is None for value in row) else row for row in zip(*chunk)]
    feed = {}
    for i, input_name in enumerate(input_names):
        shape = shapes[input_name]
        feed[input_name], ok = stack_valid(rows, lambda row, i=i, shape=shape:
                                           row[i].reshape(shape),
                                           tuple(max(d, 0) for d in shape))
    outputs = [np.zeros((0, 0), dtype=np.float32)] * len(output_names)
    if ok.any():
        results = function(**{k: tf.constant(v) for k, v in feed.items()})
        outputs = [np.asarray(results[output_name], dtype=np.float32).reshape(int(ok.sum()), -1)
                   for output_name in output_names]
    columns = [float_rows(output, ok) for output in outputs]
    return pa.StructArray.from_arrays(columns, names=[f"o{i}" for i in range(len(columns))])
