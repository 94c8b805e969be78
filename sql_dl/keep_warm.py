"""Keeps Python workers, and the models they hold, alive through idle time.

Spark's ``PythonWorkerFactory`` (checked on 4.3.0) stops *every* idle Python worker of an
executor once no worker has been taken or returned for 60 s — a constant, not a setting —
and the next query starts new workers and loads its models again. A tiny job of one
Python task per core every `INTERVAL` seconds counts as activity for each executor it
reaches, so its workers stay (memory: what the loaded models take, per worker, kept
instead of freed after a minute).
"""

from __future__ import annotations

import logging
import threading
import weakref

__all__ = ["INTERVAL", "KeepWarm", "keep_warm"]

logger = logging.getLogger(__name__)

INTERVAL = 25.0  # seconds; well under Spark's 60 s idle limit, checked every 10 s


class KeepWarm:
    """A daemon thread that runs the keep-alive job every `INTERVAL` seconds until `stop`
    (or until the SparkContext stops)."""

    def __init__(self, spark, interval: float = INTERVAL):
        self.spark = spark
        self.interval = interval
        self.runs = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sql_dl-keep-warm", daemon=True)

    def start(self) -> KeepWarm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        from sql_dl.udfs import touch_udf

        touch = touch_udf()
        context = self.spark.sparkContext
        while not self._stopped.wait(self.interval):
            if context.statusTracker().getActiveJobsIds():
                continue  # a query is running: that is activity enough
            cores = context.defaultParallelism
            try:
                context.setJobDescription("sql_dl keep-warm: keeps Python workers and their "
                                          "models through idle time")
                self.spark.range(0, cores, 1, cores).select(touch("id")).write.format(
                    "noop").mode("overwrite").save()
                self.runs += 1
            except Exception as e:  # most likely the session stopped: nothing to keep warm
                logger.debug("keep-warm stops: %s", e)
                return


_running: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext


def keep_warm(spark, interval: float = INTERVAL) -> KeepWarm:
    """Starts keeping ``spark``'s Python workers warm (once per SparkContext); returns the
    running `KeepWarm`."""
    context = spark.sparkContext
    if context not in _running or not _running[context]._thread.is_alive():
        _running[context] = KeepWarm(spark, interval).start()
    return _running[context]
