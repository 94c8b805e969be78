"""What one task of a sql_dl function did, counted into the session's accumulator: images
scored, answered from the prediction cache, or not decodable.

`ImageTally` runs in the task; `ImageCounts` is the accumulator's arithmetic, which Spark
runs on both sides (the driver reads the totals through `sql_dl.driver.counts`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pyspark.accumulators import AccumulatorParam

from sql_dl.executor.images import describe_source

__all__ = ["ImageCounts", "ImageTally"]

logger = logging.getLogger(__name__)


class ImageTally:
    """Counts the non-NULL inputs one task of a function could not decode, and the images
    its model scored or the prediction cache answered.

    They go to the session's accumulator (an `ImageCounts`), if any, under the statement
    the task runs for: each bad input once per statement, even when its plan reads the
    same images twice (``ORDER BY`` samples its input first). ``close`` logs one line per
    task in the executor's log.
    """

    def __init__(self, function: str, counter=None):
        self.function = function
        self.counter = counter
        self.count = 0
        self.seen = 0
        self.first: str | None = None

    def add(self, values: list[Any], ok: np.ndarray) -> None:
        bad = [describe_source(v) for v, good in zip(values, ok) if v is not None and not good]
        self.seen += len(values)
        if bad:
            self.count += len(bad)
            self.first = self.first or bad[0]
            if self.counter is not None:
                self.counter.add({"bad": {_statement(): {(self.function, b) for b in bad}}})

    def scored(self, images: int) -> None:
        if self.counter is not None and images:
            self.counter.add({"scored": images, "work": {_statement(): [images, 0]}})

    def cached(self, images: int) -> None:
        if self.counter is not None and images:
            self.counter.add({"cached": images, "work": {_statement(): [0, images]}})

    def close(self) -> None:
        if self.count:
            logger.warning("%s: %d of %d images could not be decoded and gave NULL, the "
                           "first: %s; sql_dl_image_error(image) tells why", self.function,
                           self.count, self.seen, self.first)


def _statement() -> str | None:
    """The statement the running task works for: its job group (a Thrift Server statement's
    id), else its SQL execution."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return None
    return (context.getLocalProperty("spark.jobGroup.id")
            or context.getLocalProperty("spark.sql.execution.id"))


class ImageCounts(AccumulatorParam):
    """A session's accumulator: ``scored``, the images models ran on, ``cached``, those the
    prediction cache answered, ``bad``, the distinct bad (function, image) pairs of each
    statement, and ``work``, ``[scored, cached]`` of each statement. Statements beyond the
    latest `KEPT` are dropped from ``work``, and their bad pairs folded into the count
    ``folded`` (key None: tasks outside any statement)."""

    KEPT = 64

    def zero(self, value):
        return {"scored": 0, "cached": 0, "folded": 0, "bad": {}, "work": {}}

    def addInPlace(self, value1, value2):
        for key in ("scored", "cached", "folded"):
            value1[key] = value1.get(key, 0) + value2.get(key, 0)
        bad = value1.setdefault("bad", {})
        for statement, pairs in value2.get("bad", {}).items():
            bad.setdefault(statement, set()).update(pairs)
        work = value1.setdefault("work", {})
        for statement, (scored, cached) in value2.get("work", {}).items():
            done = work.setdefault(statement, [0, 0])
            done[0] += scored
            done[1] += cached
        for statement in list(bad)[:max(0, len(bad) - self.KEPT)]:  # the first seen
            value1["folded"] += len(bad.pop(statement))
        for statement in list(work)[:max(0, len(work) - self.KEPT)]:
            del work[statement]
        return value1

    @staticmethod
    def bad_total(value) -> int:
        return value["folded"] + sum(len(pairs) for pairs in value["bad"].values())
