"""Loading models for inference: any model file or SavedModel directory
(`load_keras_model`, which the driver's checks use too), and in a Python worker, the shipped
copy of a plan's model (checked against the hash taken at bootstrap), loaded once per device
and kept by `model_cache`, with TensorFlow's threads set to the task's cores.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sql_dl.errors import ModelLoadError
from sql_dl.executor import devices, model_cache, registry
from sql_dl.executor.engines import OpenVinoModel
from sql_dl.plans import ModelPlan
from sql_dl.staging import file_sha256, shipped_file

__all__ = ["LoadedModel", "configure_threads", "get_model", "get_signature", "holds",
           "load_error", "load_keras_model", "traced"]

logger = logging.getLogger(__name__)

_threads_configured = False


@dataclass
class LoadedModel:
    """A model and the sub-models of its feature layers, called through Keras's compiled
    predict step, on ``device`` (see `sql_dl.executor.devices`; None: TensorFlow's default)."""

    model: Any
    device: str | None = None
    sub_models: dict[str, Any] = field(default_factory=dict)

    def predict(self, batch: np.ndarray, layer: str | None = None) -> np.ndarray:
        """Runs a float32 batch of any size through the model, or up to ``layer``."""
        with devices.placed(self.device):
            model = self.model if layer is None else self._sub_model(layer)
            outputs = model.predict_on_batch(batch)
        return np.asarray(outputs, dtype=np.float32).reshape(len(batch), -1)

    def _sub_model(self, layer: str):
        if layer not in self.sub_models:
            import keras

            self.sub_models[layer] = traced(keras.Model(self.model.inputs,
                                                        self.model.get_layer(layer).output))
        return self.sub_models[layer]


def traced(model):
    """``model`` with Keras's predict step traced once for any batch size: every batch then
    reuses that graph, so nothing is traced again however the batches are cut (and
    TensorFlow has no retracing to warn of when a worker scores many models)."""
    import tensorflow as tf

    model.make_predict_function()
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec((None, *t.shape[1:]), t.dtype),
                                  model.inputs[0] if len(model.inputs) == 1 else model.inputs)
    model.predict_function.get_concrete_function([(specs,)])
    return model


def get_model(plan: ModelPlan):
    """Returns the model of ``plan`` (a `LoadedModel`, or an `OpenVinoModel` for
    ``engine: openvino``), loading it on first use in this process, and for a Keras model
    on first use on the running task's GPU."""
    device = _device(plan)
    key = _key(plan.loaded_key, device)
    held = model_cache.holds(key)
    registry.name_model(plan.loaded_key, plan.name)
    model = model_cache.get(key, lambda: _load(plan, device))
    if not held:
        registry.note_models()  # for sql_dl_devices
    return model


def holds(plan: ModelPlan) -> bool:
    """Whether `get_model` has ``plan``'s model for the running task already."""
    return model_cache.holds(_key(plan.loaded_key, _device(plan)))


def get_signature(file: str, name: str, signature: str):
    """Returns a SavedModel's signature function (``file`` staged as ``name``), loaded once
    per device (call it under ``devices.placed(devices.task_device())``)."""
    device = devices.task_device()
    return model_cache.get(_key(f"{name}#{signature}", device),
                           lambda: _load_signature(file, name, signature, device))


def _device(plan: ModelPlan) -> str | None:
    """The running task's GPU for a Keras model; OpenVINO compiles for the CPU."""
    return None if plan.engine == "openvino" else devices.task_device()


def _key(key: str, device: str | None) -> str:
    return key if device is None else f"{key}@{device}"


def _load_signature(file: str, name: str, signature: str, device: str | None):
    configure_threads()
    import tensorflow as tf

    with devices.placed(device):
        return tf.saved_model.load(shipped_file(file, name)).signatures[signature]


def _load(plan: ModelPlan, device: str | None):
    configure_threads()
    started = time.monotonic()
    path = shipped_file(plan.file, plan.staged_name)
    actual = None if plan.sha256 is None else file_sha256(path)
    if actual != plan.sha256:
        raise ModelLoadError(f"model {plan.name!r}: the copy of {plan.source!r} shipped to this "
                             f"executor ({path}) is not the file bootstrap checked (its SHA-256 "
                             "differs): it was changed or corrupted after bootstrap. Run "
                             f"bootstrap again (sql-dl serve: send SIGHUP). Received: "
                             f"sha256={actual}")
    if plan.engine == "openvino":
        model = OpenVinoModel(path, plan.precision, plan.features_layer, _task_cpus())
        logger.info("Compiled model %s for OpenVINO (%s) in %.1f s", plan.name, plan.precision,
                    time.monotonic() - started)
        return model
    with devices.placed(device):
        try:
            model = load_keras_model(path, plan.trust_code)
        except Exception as e:  # a file changed or corrupted after bootstrap
            raise ModelLoadError(f"model {plan.name!r}: cannot load the copy shipped to this "
                                 f"executor ({path}): {load_error(e)}. Received: "
                                 f"source={plan.source!r}") from e
        loaded = LoadedModel(traced(model), device)
    logger.info("Loaded model %s%s in %.1f s", plan.name, f" on {device}" if device else "",
                time.monotonic() - started)
    return loaded


def configure_threads() -> None:
    """Gives TensorFlow the cores of one task, so parallel tasks do not oversubscribe, and
    on GPU executors memory growth (see `sql_dl.executor.devices.configure_memory_growth`)."""
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    from pyspark import TaskContext

    if TaskContext.get() is None:
        return
    import tensorflow as tf

    cpus = _task_cpus()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # TensorFlow already initialised in this process
        pass
    if devices.task_gpus():
        devices.configure_memory_growth()


def _task_cpus() -> int:
    """The cores of the running task (1 outside a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return 1 if context is None else max(1, int(context.cpus()))


def load_keras_model(path: str, trust_code: bool = False):
    """Loads a .keras or .h5 file, or a SavedModel directory, for inference.

    Without ``trust_code``, Keras's safe mode refuses models that carry Python code (a
    ``Lambda`` layer's bytecode) instead of running it.
    """
    import keras

    if os.path.isdir(path):
        return _saved_model(path)
    return keras.saving.load_model(path, compile=False, safe_mode=not trust_code)


def load_error(error: Exception) -> str:
    """Why a model could not be loaded and what to do, in sql_dl's terms (Keras's own advice
    about ``safe_mode`` does not apply to manifest users)."""
    if "safe_mode" in str(error) or "Lambda" in str(error):
        return ("the model carries Python code (a Lambda layer), which sql_dl does not run "
                "unless its manifest entry says trust_code: true. Set it only for a model "
                "whose author you trust: loading it runs that code")
    return (f"{type(error).__name__}: {error}. Give a .keras or .h5 file (model.save) or a "
            "SavedModel directory (model.export)")


def _saved_model(path: str):
    """A TensorFlow SavedModel as a Keras model with one input and one output."""
    import keras
    import tensorflow as tf

    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serve")  # model.export()
    except ValueError:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    function = layer.call_endpoint_fn
    specs = tf.nest.flatten(getattr(function, "input_signature", None)
                            or function.structured_input_signature)
    if len(specs) != 1:
        raise ValueError(f"the SavedModel takes {len(specs)} inputs; sql_dl runs models with "
                         "exactly one input")
    inputs = keras.Input(shape=specs[0].shape[1:], dtype=specs[0].dtype)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(f"the SavedModel has outputs {sorted(outputs)}; sql_dl runs models "
                             "with exactly one output")
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs)
