"""The system views that read the executors, ``sql_dl_cache`` and ``sql_dl_devices``, and
bootstrap's check that executors given GPUs can use them. Each runs a probe
(`sql_dl.executor.probes`) in one task per core (`sql_dl.spark.backends.per_core`).
"""

from __future__ import annotations

import json
import logging
import warnings

from sql_dl.errors import SqlDlWarning
from sql_dl.executor.probes import cache_stats_udf, devices_udf, gpu_report_udf
from sql_dl.spark.backends import per_core

__all__ = ["cache_frame", "check_gpus", "devices_frame"]

logger = logging.getLogger(__name__)


def cache_frame(spark, tasks: int | None = None):
    """The ``sql_dl_cache`` view's DataFrame: per machine and cache directory reached by
    ``tasks`` tasks (default one per core), its entries, bytes and hits per model function."""
    from pyspark.sql import functions as F

    keys = ["host", "directory", "model"]
    return (per_core(spark, lambda i: F.explode(cache_stats_udf()(i)).alias("s"), tasks)
            .select("s.*")
            .groupBy(*keys).agg(*(F.max(c).alias(c) for c in ("entries", "bytes", "hits")))
            .orderBy(*keys))


def devices_frame(spark, tasks: int | None = None):
    """The ``sql_dl_devices`` view's DataFrame: the models the Python workers of each
    executor that ``tasks`` tasks (default one per core) reach have loaded, per device."""
    from pyspark.sql import functions as F

    return (per_core(spark, lambda i: F.explode(devices_udf()(i)).alias("d"), tasks)
            .select("d.*")
            .dropDuplicates().orderBy("host", "worker", "device", "model"))


def check_gpus(spark) -> None:
    """Warns when the executors are given GPUs (``spark.executor.resource.gpu.amount``) but
    TensorFlow in an executor's Python worker sees none (one short job, only then)."""
    amount = float(spark.conf.get("spark.executor.resource.gpu.amount", None) or 0)
    if amount <= 0:
        return
    report = json.loads(per_core(spark, gpu_report_udf(), 1).first()[0])
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
        "TensorFlow's GPU build on the executors (docs: deployment, GPU executors). "
        f"Received: spark.executor.resource.gpu.amount={amount:g}, task GPUs "
        f"{report['task_gpus']}", SqlDlWarning, stacklevel=3)
