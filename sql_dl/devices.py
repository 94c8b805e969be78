"""Where a task's model calls run: on the GPU Spark assigned to the task, when it has one.

Spark schedules GPUs per task (``spark.task.resource.gpu.amount``) and tells the task which
in ``TaskContext.resources()["gpu"].addresses``. PySpark reuses a Python worker across
tasks, and those tasks may have been assigned different GPUs of the executor, so a worker
does not pin itself to one: it sees all of the executor's GPUs, keeps a model loaded once
per device it was asked to use (`sql_dl.worker.get_model`), and runs each batch under the
running task's device (`placed`). Without GPU resources nothing changes: no device scope,
one copy of each model.

The placement itself is a function from a TensorFlow device name (``/GPU:1``) to a context
manager, ``tf.device`` by default. ``SQL_DL_DEVICE_PLACEMENT=module:function`` in the
executors' environment replaces it (the tests do, on machines without GPUs, to record where
each batch would run).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from sql_dl.errors import SqlDlWarning

__all__ = ["DEVICES_VIEW", "PLACEMENT_ENV", "check_gpus", "configure_memory_growth",
           "devices_frame", "executor_devices", "gpu_report", "note_models", "placed",
           "task_device", "task_gpus", "tensorflow_device"]

logger = logging.getLogger(__name__)

PLACEMENT_ENV = "SQL_DL_DEVICE_PLACEMENT"
DEVICES_VIEW = "sql_dl_devices"
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
                raise ValueError(f"{PLACEMENT_ENV} names no importable function "
                                 f"(module:function): {e}. Received: {spec!r}") from e
        else:
            _placement = tensorflow_device
    return _placement


def note_models() -> None:
    """Records the models this Python worker holds, per device, where `executor_devices`
    in any task of the same executor finds them (a file per worker in the executor's
    SparkFiles folder, which goes with the executor)."""
    from sql_dl import model_cache
    from sql_dl.worker import MODEL_NAMES as names

    rows = []
    for key, loads in sorted(model_cache.stats()["loads"].items()):
        if not model_cache.holds(key):  # evicted
            continue
        loaded, _, device = key.partition("@")
        rows.append({"host": socket.gethostname(), "worker": os.getpid(),
                     "device": device or DEFAULT_DEVICE, "model": names.get(loaded, loaded),
                     "loads": loads})
    folder = _registry()
    folder.mkdir(exist_ok=True)
    temporary = folder / f".{os.getpid()}.json"
    temporary.write_text(json.dumps(rows))
    temporary.replace(folder / f"{os.getpid()}.json")
    _live_files()  # one file per live worker: those of workers that exited go


def executor_devices() -> list[dict]:
    """The models of every live Python worker of the running task's executor, per device
    (as `note_models` recorded them)."""
    rows = []
    for path in _live_files():
        try:
            rows += json.loads(path.read_text())
        except (OSError, ValueError):  # gone or being replaced: its worker is listed next time
            continue
    return rows


def _live_files() -> list[Path]:
    """The registry's files of live workers; removes the others."""
    live = []
    for path in sorted(_registry().glob("[0-9]*.json")):
        if _alive(int(path.stem)):
            live.append(path)
        else:
            path.unlink(missing_ok=True)
    return live


def _registry() -> Path:
    from pyspark import SparkFiles

    return Path(SparkFiles.getRootDirectory()) / "sql_dl-workers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def devices_frame(spark, tasks: int | None):
    """The ``sql_dl_devices`` view's DataFrame: the models the Python workers of each
    executor that ``tasks`` tasks (one per core) reach have loaded, per device."""
    from pyspark.sql import functions as F

    from sql_dl.udfs import devices_udf

    tasks = tasks or 1
    return (spark.range(0, tasks, 1, tasks)
            .select(F.explode(devices_udf()("id")).alias("d")).select("d.*")
            .dropDuplicates().orderBy("host", "worker", "device", "model"))


def gpu_report() -> dict:
    """What TensorFlow sees in this process: ``host``, ``tensorflow`` (its version),
    ``cuda`` (built with it), ``gpus`` (their names) and the task's ``task_gpus``."""
    import tensorflow as tf

    return {"host": socket.gethostname(), "tensorflow": tf.__version__,
            "cuda": tf.test.is_built_with_cuda(),
            "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
            "task_gpus": list(task_gpus())}


def check_gpus(spark) -> None:
    """Warns when the executors are given GPUs (``spark.executor.resource.gpu.amount``) but
    TensorFlow in an executor's Python worker sees none (one short job, only then)."""
    from sql_dl.udfs import gpu_report_udf

    amount = float(spark.conf.get("spark.executor.resource.gpu.amount", None) or 0)
    if amount <= 0:
        return
    report = json.loads(spark.range(0, 1, 1, 1).select(gpu_report_udf()("id")).first()[0])
    if report["gpus"]:
        logger.info("TensorFlow on executor %s sees %d GPU(s): %s", report["host"],
                    len(report["gpus"]), ", ".join(report["gpus"]))
        return
    why = ("it is built without CUDA (the tensorflow-cpu package)" if not report["cuda"] else
           "it is built with CUDA but finds no GPU: check the NVIDIA driver, and that "
           "CUDA_VISIBLE_DEVICES is not empty")
    warnings.warn(
        f"the executors are given GPUs, but TensorFlow {report['tensorflow']} on executor "
        f"{report['host']} sees none: {why}. Every model runs on the CPU. Install "
        "TensorFlow's GPU build on the executors (README: GPU executors). Received: "
        f"spark.executor.resource.gpu.amount={amount:g}, task GPUs {report['task_gpus']}",
        SqlDlWarning, stacklevel=3)
