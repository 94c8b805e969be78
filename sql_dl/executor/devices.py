"""Where a task's model calls run: on the GPU Spark assigned to the task, when it has one.

Spark schedules GPUs per task (``spark.task.resource.gpu.amount``) and tells the task which
in ``TaskContext.resources()["gpu"].addresses``. PySpark reuses a Python worker across
tasks, and those tasks may have been assigned different GPUs of the executor, so a worker
does not pin itself to one: it sees all of the executor's GPUs, keeps a model loaded once
per device it was asked to use (`sql_dl.executor.loading.get_model`), and runs each batch
under the running task's device (`placed`). Without GPU resources nothing changes: no
device scope, one copy of each model.

The placement itself is a function from a TensorFlow device name (``/GPU:1``) to a context
manager, ``tf.device`` by default. ``SQL_DL_DEVICE_PLACEMENT=module:function`` in the
executors' environment replaces it (the tests do, on machines without GPUs, to record where
each batch would run).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from typing import Callable, ContextManager, Iterator

from sql_dl.errors import ConfigurationError

__all__ = ["DEFAULT_DEVICE", "PLACEMENT_ENV", "configure_memory_growth", "gpu_report", "placed",
           "task_device", "task_gpus", "tensorflow_device"]

PLACEMENT_ENV = "SQL_DL_DEVICE_PLACEMENT"
DEFAULT_DEVICE = "default"  # the device column of a model without a GPU: TensorFlow's choice

_placement: Callable[[str], ContextManager] | None = None


def task_gpus() -> tuple[str, ...]:
    """The GPU addresses Spark assigned to the running task (none outside a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return ()
    gpu = context.resources().get("gpu")
    return tuple(gpu.addresses) if gpu is not None else ()


def task_device() -> str | None:
    """TensorFlow's name of the running task's GPU (the first, if it has several), or None
    when it has none.

    Spark's addresses are the discovery script's (CUDA device numbers, as ``nvidia-smi``
    gives them). TensorFlow numbers the GPUs it sees: when ``CUDA_VISIBLE_DEVICES`` limits
    them (YARN and Kubernetes may set it), address ``a`` is the GPU at ``a``'s position in it.
    """
    addresses = task_gpus()
    if not addresses:
        return None
    address = addresses[0]
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if d.strip()]
    index = visible.index(address) if address in visible else int(address)
    return f"/GPU:{index}"


@contextlib.contextmanager
def placed(device: str | None) -> Iterator[None]:
    """Runs the block on ``device`` (a `task_device` name) through the placement function;
    does nothing for None."""
    if device is None:
        yield
        return
    with _placement_function()(device):
        yield


def tensorflow_device(device: str) -> ContextManager:
    """The default placement: TensorFlow's ``tf.device``."""
    import tensorflow as tf

    return tf.device(device)


def configure_memory_growth() -> None:
    """Lets TensorFlow take GPU memory as it needs it, not all of it at once, so that the
    executor's Python workers (one per running task) can share a GPU. Must run before
    TensorFlow initialises its GPUs in this process; later, it changes nothing."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: its setting stays
            pass


def _placement_function() -> Callable[[str], ContextManager]:
    global _placement
    if _placement is None:
        spec = os.environ.get(PLACEMENT_ENV)
        if spec:
            module, _, name = spec.partition(":")
            try:
                _placement = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError, ValueError) as e:
                raise ConfigurationError(
                    f"{PLACEMENT_ENV} names no importable function "
                    f"(module:function): {e}. Received: {spec!r}") from e
        else:
            _placement = tensorflow_device
    return _placement


def gpu_report() -> dict:
    """What TensorFlow sees in this process: ``host``, ``tensorflow`` (its version),
    ``cuda`` (built with it), ``gpus`` (their names) and the task's ``task_gpus``."""
    import tensorflow as tf

    return {"host": socket.gethostname(), "tensorflow": tf.__version__,
            "cuda": tf.test.is_built_with_cuda(),
            "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
            "task_gpus": list(task_gpus())}
