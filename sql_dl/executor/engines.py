"""The OpenVINO engine (``engine: openvino``): a Keras model converted once on the driver,
at bootstrap, into an OpenVINO IR with two outputs (the model's output and its features
layer), kept in the cache by the model file's content, shipped like any model, and compiled
once per Python worker with the task's cores as threads, in float32 or bfloat16.

bfloat16 is fast on CPUs with AVX512_BF16 or AMX; elsewhere OpenVINO runs such a model at
float32 speed, which `bf16_native` tells.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sql_dl._version import __version__
from sql_dl.errors import ModelLoadError
from sql_dl.paths import cache_dir

__all__ = ["OpenVinoModel", "bf16_native", "convert_to_openvino", "engine_id"]

logger = logging.getLogger(__name__)

_IR = "model.xml"  # with model.bin beside it
_HINTS = {"float32": "f32", "bfloat16": "bf16"}
_core = None


def _openvino():
    """OpenVINO, imported with its usage telemetry off in this process.

    Unless the user opted out, ``import openvino`` (and each conversion) sends telemetry
    from a forked copy of the importing process (``openvino_telemetry``'s GA4 backend, a
    multiprocessing child it terminates after a timeout without network). In Spark's driver
    and Python workers that copy shares the sockets of Py4J and of the worker protocol; the
    driver's next call could fail (``Py4JError: ... does not exist in the JVM``). sql_dl
    never asks for consent, so it declines, for its own processes only.
    """
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package: nothing is sent
        pass
    else:
        OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    import openvino

    return openvino


def _openvino_core():
    global _core
    if _core is None:
        _core = _openvino().Core()
    return _core


def engine_id(engine: str, precision: str) -> str:
    """What the prediction cache keys an engine's outputs by: its name, precision and
    version."""
    if engine == "keras":
        return "keras"
    return f"openvino-{precision}-{_openvino().__version__}"


def bf16_native() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AVX512_BF16 or AMX)."""
    return "BF16" in _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def convert_to_openvino(model: Any, features_layer: str, model_sha256: str, where: str) -> str:
    """Converts a Keras model to an OpenVINO IR directory whose outputs are the model's output
    and ``features_layer``'s, once per model content (kept under the cache directory).

    Raises:
        ModelLoadError: OpenVINO cannot convert the model; the message names what it could
            not convert.
    """
    import keras

    openvino = _openvino()
    key = hashlib.sha256(json.dumps({
        "model": model_sha256, "features_layer": features_layer, "sql_dl": __version__,
        "openvino": openvino.__version__, "keras": keras.__version__}, sort_keys=True
    ).encode()).hexdigest()[:16]
    target = cache_dir() / "openvino" / f"model-{key}"
    if (target / _IR).exists():
        return str(target)
    started = time.monotonic()
    both = keras.Model(model.inputs, [model.outputs[0], model.get_layer(features_layer).output])
    with tempfile.TemporaryDirectory(prefix="sql_dl-openvino-") as work:
        saved = Path(work) / "saved_model"
        try:
            both.export(str(saved), format="tf_saved_model", verbose=False)
            converted = openvino.convert_model(str(saved))
        except Exception as e:  # TensorFlow and OpenVINO raise many types
            raise ModelLoadError(f"{where}.engine: OpenVINO cannot convert this model: "
                                 f"{_conversion_problem(e)}. Use engine: keras for it. "
                                 "Received: engine='openvino'") from e
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        partial.mkdir(parents=True, exist_ok=True)
        openvino.save_model(converted, str(partial / _IR), compress_to_fp16=False)
        try:
            os.replace(partial, target)
        except OSError:  # another process converted it first
            shutil.rmtree(partial, ignore_errors=True)
    logger.info("Converted %s to OpenVINO in %.1f s (%s)", where, time.monotonic() - started,
                target)
    return str(target)


def _conversion_problem(error: Exception) -> str:
    """The lines of OpenVINO's conversion report that name the operations it could not
    convert (``-- No conversion rule found for operations: Lgamma``), else the error."""
    lines = [line.strip().lstrip("-").strip() for line in str(error).splitlines()
             if line.strip().startswith("-- ")]
    return "; ".join(lines) if lines else f"{type(error).__name__}: {error}"


class OpenVinoModel:
    """A converted model compiled for this worker's CPU; ``predict`` as `LoadedModel`'s."""

    def __init__(self, path: str, precision: str, features_layer: str, threads: int):
        self.features_layer = features_layer
        self.compiled = _openvino_core().compile_model(
            os.path.join(path, _IR), "CPU",
            {"INFERENCE_PRECISION_HINT": _HINTS[precision], "INFERENCE_NUM_THREADS": threads,
             # pinned, the threads of the workers of one machine would share its first cores
             "ENABLE_CPU_PINNING": False})

    def predict(self, batch: np.ndarray, layer: str | None = None) -> np.ndarray:
        """Runs a float32 batch of any size; ``layer`` None gives the output, the features
        layer's name its values."""
        if layer not in (None, self.features_layer):
            raise ValueError(f"the OpenVINO model has no output for layer {layer!r}; it has "
                             f"the output and {self.features_layer!r}")
        output = self.compiled.outputs[0 if layer is None else 1]
        values = self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[output]
        return np.asarray(values, dtype=np.float32).reshape(len(batch), -1)
