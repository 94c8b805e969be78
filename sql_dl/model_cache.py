"""Per-Python-worker model cache: each model is loaded once and reused across tasks and queries.

A module is imported once per process, so its state lives as long as the (reused) worker.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sql_dl.errors import ModelLoadError
from sql_dl.models import ModelPlan, file_sha256, load_error, load_keras_model, unpack

__all__ = ["LoadedModel", "configure_threads", "get_model", "get_signature", "shipped_file", "stats"]

logger = logging.getLogger(__name__)

MAX_MODELS = 8

_lock = threading.Lock()
_models: OrderedDict[str, Any] = OrderedDict()  # loaded models and SavedModel signatures
_loads: Counter[str] = Counter()
_hits: Counter[str] = Counter()
_threads_configured = False


@dataclass
class LoadedModel:
    """A model and the sub-models of its feature layers, called through Keras's compiled
    predict step."""

    model: Any
    sub_models: dict[str, Any] = field(default_factory=dict)

    def predict(self, batch: np.ndarray, batch_size: int, layer: str | None = None) -> np.ndarray:
        """Runs a float32 batch through the model, or up to ``layer``.

        A short batch is padded to the next power of two (at most ``batch_size``), so the
        compiled step is traced for a few shapes only, wasting at most half a batch.
        """
        model = self.model if layer is None else self._sub_model(layer)
        n = len(batch)
        padded = min(batch_size, 1 << max(0, n - 1).bit_length())
        if n < padded:
            padding = np.zeros((padded - n, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, padding])
        outputs = model.predict_on_batch(batch)
        return np.asarray(outputs, dtype=np.float32)[:n].reshape(n, -1)

    def _sub_model(self, layer: str):
        if layer not in self.sub_models:
            import keras

            self.sub_models[layer] = keras.Model(self.model.inputs,
                                                 self.model.get_layer(layer).output)
        return self.sub_models[layer]


def stats() -> dict[str, dict[str, int]]:
    """Per staged model file (``ModelPlan.staged_name``): how often this process loaded it
    and how often the cache answered."""
    return {"loads": dict(_loads), "hits": dict(_hits)}


def get_model(plan: ModelPlan) -> LoadedModel:
    """Returns the model of ``plan``, loading it on first use in this process."""
    return _cached(plan.staged_name, lambda: _load(plan))


def get_signature(file: str, name: str, signature: str):
    """Returns a SavedModel's signature function (``file`` staged as ``name``), loaded once."""
    return _cached(f"{name}#{signature}", lambda: _load_signature(file, name, signature))


def _cached(key: str, load):
    with _lock:
        if key in _models:
            _hits[key] += 1
            _models.move_to_end(key)
            return _models[key]
        loaded = load()
        _models[key] = loaded
        _loads[key] += 1
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
        return loaded


def shipped_file(file: str, name: str) -> str:
    """Inside a Spark task, the copy of ``file`` Spark shipped as ``name``; elsewhere ``file``."""
    from pyspark import SparkFiles, TaskContext

    if TaskContext.get() is None:
        return file
    path = SparkFiles.get(name)
    if not os.path.exists(path):
        raise ModelLoadError(f"{name} (from {file!r}) was not shipped to this executor; run "
                             "bootstrap (or the transform) again in this session")
    return unpack(path)


def _load_signature(file: str, name: str, signature: str):
    configure_threads()
    import tensorflow as tf

    return tf.saved_model.load(shipped_file(file, name)).signatures[signature]


def _load(plan: ModelPlan) -> LoadedModel:
    configure_threads()
    started = time.monotonic()
    path = shipped_file(plan.file, plan.staged_name)
    if plan.sha256 is not None and file_sha256(path) != plan.sha256:
        raise ModelLoadError(f"model {plan.name!r}: the copy of {plan.source!r} shipped to this "
                             f"executor ({path}) is not the file bootstrap checked (its SHA-256 "
                             "differs): it was changed or corrupted after bootstrap. Run "
                             "bootstrap again (sql-dl serve: send SIGHUP).")
    try:
        model = load_keras_model(path, plan.trust_code)
    except Exception as e:  # a file changed or corrupted after bootstrap
        raise ModelLoadError(f"model {plan.name!r}: cannot load {path} (from {plan.source!r}): "
                             f"{type(e).__name__}: {e}. {load_error(e)}") from e
    logger.info("Loaded model %s in %.1f s", plan.name, time.monotonic() - started)
    gc.collect()
    gc.freeze()  # TensorFlow's millions of long-lived objects: keep them out of later collections
    return LoadedModel(model)


def configure_threads() -> None:
    """Gives TensorFlow the cores of one task, so parallel tasks do not oversubscribe."""
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return
    import tensorflow as tf

    cpus = max(1, int(context.cpus()))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # TensorFlow already initialised in this process
        pass
