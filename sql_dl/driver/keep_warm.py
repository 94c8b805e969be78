"""Keeps Python workers, and the models they hold, alive and loaded between queries.

Two things take loaded models away from an idle session (checked on Spark 4.3.0):

- Spark's ``PythonWorkerFactory`` stops *every* idle Python worker of an executor once no
  worker has been taken or returned for 60 s — a constant, not a setting — and the next
  query starts new workers that load their models again.
- A task that stops reading its worker's output early ends with that worker killed: it
  was mid-stream, so it cannot be reused, and the next query that needs a worker starts one
  and loads the models. Previews (``LIMIT n``) no longer do that, as sql_dl's Spark
  extension reads their output to the end (``ReleasePythonWorkers``, jvm/); a limit that
  cannot go below the model (over a filter on its output) still does.

A small job of one Python task per core, which loads the session's models where they are
missing (`sql_dl.executor.probes.warm_up_udf`; a cache hit where they are not), answers
both: it runs every `INTERVAL` seconds, which counts as activity for each executor it reaches, and
`SETTLE` seconds after other jobs end, which reloads what such a query took. Memory: what
the loaded models take, per worker, kept instead of freed after a minute.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

from sql_dl.executor.probes import touch_udf, warm_up_udf
from sql_dl.spark.backends import run_per_core

__all__ = ["INTERVAL", "SETTLE", "KeepWarm", "keep_warm", "remember_models",
           "warm_up_in_background"]

logger = logging.getLogger(__name__)

INTERVAL = 25.0  # seconds; well under Spark's 60 s idle limit, checked every 10 s
SETTLE = 2.0  # seconds without jobs after activity before warming again
POLL = 0.5  # seconds between looks at the running jobs

_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext


def remember_models(spark, plans, replace: bool = True) -> None:
    """Records the models a bootstrap registered (`ModelPlan` s): the ones `KeepWarm` keeps
    loaded in ``spark``'s workers. ``replace=False`` adds them to the earlier ones (by model
    name, the latest definition of each)."""
    models = {} if replace else _models.get(spark.sparkContext, {})
    _models[spark.sparkContext] = {**models, **{plan.name: plan for plan in plans}}


class KeepWarm:
    """A daemon thread that runs the warm-up job every `INTERVAL` seconds, and `SETTLE`
    seconds after other jobs (seen running, or reported by `poke`) end, until `stop` (or
    until the SparkContext stops)."""

    def __init__(self, spark, interval: float = INTERVAL, settle: float = SETTLE,
                 warm_now: bool = False):
        self.spark = spark
        self.interval = interval
        self.settle = settle
        self.warm_now = warm_now
        self.runs = 0
        self._stopped = threading.Event()
        self._poked = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sql_dl-keep-warm", daemon=True)

    def start(self) -> KeepWarm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def poke(self) -> None:
        """Says a query ended: warm again once `settle` seconds pass without jobs."""
        self._poked.set()

    def _loop(self) -> None:
        context = self.spark.sparkContext
        last_run = last_activity = time.monotonic()
        pending = self.warm_now  # jobs ran since the last warm-up (or none ever ran)
        if self.warm_now:
            last_activity -= self.settle
        while not self._stopped.wait(POLL):
            now = time.monotonic()
            if self._poked.is_set() or context.statusTracker().getActiveJobsIds():
                self._poked.clear()
                pending, last_activity = True, now
                continue
            if (pending and now - last_activity >= self.settle) or now - last_run >= self.interval:
                if not self._warm(context):
                    return
                pending, last_run = False, time.monotonic()

    def _warm(self, context) -> bool:
        """Runs the job once; False when the session is gone."""
        models = list(_models.get(context, {}).values())
        function = warm_up_udf(models) if models else touch_udf()
        try:
            context.setJobDescription("sql_dl keep-warm: keeps Python workers and their "
                                      "models loaded between queries")
            run_per_core(self.spark, function, context.defaultParallelism)
        except Exception as e:  # most likely the session stopped: nothing to keep warm
            logger.debug("keep-warm stops: %s", e)
            return False
        self.runs += 1
        return True


_running: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext


def keep_warm(spark, interval: float = INTERVAL, warm_now: bool = False) -> KeepWarm:
    """Starts keeping ``spark``'s Python workers warm (once per SparkContext); returns the
    running `KeepWarm`. With ``warm_now``, it loads the models at once (when no job runs),
    not after the first interval: a prompt warms up while the user types."""
    context = spark.sparkContext
    if context not in _running or not _running[context]._thread.is_alive():
        _running[context] = KeepWarm(spark, interval, warm_now=warm_now).start()
    elif warm_now:
        _running[context].poke()
    return _running[context]


def warm_up_in_background(spark) -> Future:
    """Loads the models the session's bootstraps registered in a Python worker per core, in
    a thread of its own (one short job), while the caller goes on; the Future's result
    raises what the job raised."""
    models = list(_models.get(spark.sparkContext, {}).values())
    parallelism = spark.sparkContext.defaultParallelism

    def run() -> None:
        started = time.monotonic()
        run_per_core(spark, warm_up_udf(models), parallelism)
        logger.info("Warmed up %d model(s) in %d Python worker(s) in %.1f s", len(models),
                    parallelism, time.monotonic() - started)

    pool = ThreadPoolExecutor(1, thread_name_prefix="sql_dl-warm-up")
    try:
        future = pool.submit(run)
    finally:
        pool.shutdown(wait=False)
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: Future) -> None:
    error = future.exception()
    if error is not None:  # the first query loads the models instead
        logger.warning("The models were not loaded in the Python workers at start: %s",
                       str(error).strip().splitlines()[0] if str(error).strip() else error)
