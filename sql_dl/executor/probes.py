"""The probes: small Arrow UDFs that run once per Python worker, in a job of one task per
core (`sql_dl.spark.backends.per_core`), to load the session's models before queries need
them (`warm_up_udf`, and `touch_udf` for keep-warm), or to read what each executor holds
for the system views ``sql_dl_cache`` and ``sql_dl_devices`` and bootstrap's GPU check.
"""

from __future__ import annotations

import json
import time
from typing import Iterator

import numpy as np
import pyarrow as pa

from sql_dl.executor.devices import gpu_report
from sql_dl.executor.loading import get_model, holds
from sql_dl.executor.prediction_cache import cache_path, shared
from sql_dl.executor.registry import executor_devices
from sql_dl.executor.udfs import arrow_udf
from sql_dl.plans import ModelPlan

__all__ = ["CACHE_STATS", "DEVICES", "WARM_UP_HOLD", "cache_stats_udf", "devices_udf",
           "gpu_report_udf", "touch_udf", "warm_up_udf"]

CACHE_STATS = ("array<struct<host:string,directory:string,model:string,entries:bigint,"
               "bytes:bigint,hits:bigint>>")
_CACHE_STATS_ARROW = pa.struct([("host", pa.string()), ("directory", pa.string()),
                                ("model", pa.string()), ("entries", pa.int64()),
                                ("bytes", pa.int64()), ("hits", pa.int64())])
DEVICES = "array<struct<host:string,worker:bigint,device:string,model:string,loads:bigint>>"
_DEVICES_ARROW = pa.struct([("host", pa.string()), ("worker", pa.int64()),
                            ("device", pa.string()), ("model", pa.string()),
                            ("loads", pa.int64())])
WARM_UP_HOLD = 0.2  # seconds a warm-up task keeps its worker


def warm_up_udf(plans: list[ModelPlan]):
    """``id -> id``: loads every model this worker does not hold yet and runs one batch
    through it. A worker that holds them all still keeps the task `WARM_UP_HOLD` seconds, so
    that the tasks of one job (one per core) take distinct workers."""

    def warm_up(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        for plan in plans:
            if holds(plan):
                continue
            model = get_model(plan)
            batch = np.zeros((plan.batch_size, *plan.input_shape), dtype=np.float32)
            model.predict(batch)
            model.predict(batch, plan.features_layer)
        time.sleep(WARM_UP_HOLD)
        yield from batches

    return arrow_udf(warm_up, "long")


def cache_stats_udf():
    """``id -> array<struct>``: the prediction cache of the machine the task runs on, one
    element per model function (see `PredictionCache.stats`)."""

    def cache_stats(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        path = cache_path()
        rows = [] if not path.exists() else [
            {"host": host, "directory": str(path.parent), "model": model, "entries": entries,
             "bytes": size, "hits": hits}
            for host, model, entries, size, hits in shared(path).stats()]
        for batch in batches:
            yield pa.array([rows] * len(batch), pa.list_(_CACHE_STATS_ARROW))

    return arrow_udf(cache_stats, CACHE_STATS)


def devices_udf():
    """``id -> array<struct>``: the models of the Python workers of the task's executor, per
    device (see `sql_dl.executor.registry.executor_devices`)."""

    def devices(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        rows = executor_devices()
        for batch in batches:
            yield pa.array([rows] * len(batch), pa.list_(_DEVICES_ARROW))

    return arrow_udf(devices, DEVICES)


def gpu_report_udf():
    """``id -> string``: JSON of what TensorFlow sees in the task's worker (see
    `sql_dl.executor.devices.gpu_report`)."""

    def report(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        text = json.dumps(gpu_report())
        for batch in batches:
            yield pa.array([text] * len(batch), pa.string())

    return arrow_udf(report, "string")


def touch_udf():
    """``id -> id``, run in a Python worker: Spark counts it as the workers' activity."""

    def touch(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        yield from batches

    return arrow_udf(touch, "long")
