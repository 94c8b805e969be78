"""Counts of a session's work: images scored, answered from the prediction cache or not
decodable (counted by the tasks of sql_dl's functions into one accumulator, `ImageCounts`),
and image files skipped because they were deleted after their folder was listed (counted
by the Spark extension).

Each count is a running total, read before and after a statement for its own counts; the
accumulator also keeps the counts of each recent statement, by its id, for the server's
query log, where statements overlap.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
from pyspark.accumulators import AccumulatorParam

__all__ = ["Counts", "ImageCounts", "ImageTally", "bad_image_count", "cached_image_count",
           "counts", "scored_image_count", "skipped_file_count", "statement_counts"]

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
        from sql_dl.images import describe_source

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


class Counts(NamedTuple):
    """Totals at one moment; ``later - earlier`` gives what happened in between. A count
    sql_dl cannot have in the session (Spark Connect, no extension) is 0."""

    scored: int = 0
    cached: int = 0
    bad: int = 0
    skipped: int = 0

    def __sub__(self, other: Counts) -> Counts:  # type: ignore[override]
        return Counts(*(a - b for a, b in zip(self, other)))

    def messages(self, image_error_function: str) -> list[str]:
        """What a statement with these counts should tell its user: warnings first."""
        lines = []
        if self.bad:
            lines.append(f"Warning: {self.bad} image(s) could not be decoded and gave NULL; "
                         f"{image_error_function}(image) tells why")
        if self.skipped:
            lines.append(f"Warning: {self.skipped} image file(s) were deleted after their folder "
                         "was listed and were skipped (Spark's log names them)")
        if self.cached:
            lines.append(f"Images: {self.scored} scored, {self.cached} from the prediction cache")
        return lines


def _value(spark) -> dict | None:
    """The session's `ImageCounts` value, or None without accumulators (Spark Connect)."""
    from sql_dl.backends import backend_for

    counter = backend_for(spark).image_counter()
    return None if counter is None else counter.value


def counts(spark) -> Counts:
    """The session's totals now."""
    from sql_dl.backends import backend_for

    value = _value(spark) or {}
    return Counts(scored=value.get("scored", 0), cached=value.get("cached", 0),
                  bad=ImageCounts.bad_total(value) if value else 0,
                  skipped=backend_for(spark).skipped_file_count() or 0)


def statement_counts(spark, statement: str) -> Counts:
    """What one recent statement did, by its id (a Thrift Server statement's, or a SQL
    execution's); ``skipped`` is not counted per statement (0)."""
    value = _value(spark)
    if value is None:
        return Counts()
    scored, cached = value.get("work", {}).get(statement, (0, 0))
    return Counts(scored=scored, cached=cached, bad=len(value.get("bad", {}).get(statement, ())))


def bad_image_count(spark) -> int | None:
    """How many images sql_dl's functions could not decode (each gave NULL) in this session.

    A running total over all queries since the session started: read it before and after a
    query for that query's count. Within one query each image counts once per function that
    read it, even when Spark's plan reads it twice. None on Spark Connect, which has no
    accumulators (each task still logs its count).
    """
    value = _value(spark)
    return None if value is None else ImageCounts.bad_total(value)


def scored_image_count(spark) -> int | None:
    """How many images sql_dl's models have run on in this session: a running total, as
    `bad_image_count`. Work, not distinct images: an image scored twice (by two functions,
    or by a plan that reads it twice) counts twice. None on Spark Connect."""
    value = _value(spark)
    return None if value is None else value["scored"]


def cached_image_count(spark) -> int | None:
    """How many images the prediction cache answered for sql_dl's model functions in this
    session (without decoding them or calling a model): a running total, as
    `bad_image_count`. None on Spark Connect."""
    value = _value(spark)
    return None if value is None else value["cached"]


def skipped_file_count(spark) -> int | None:
    """How many image files listed for a query were deleted before it read them (each was
    skipped, and the driver's log names it once): a running total, as `bad_image_count`.
    None without sql_dl's Spark extension (such files are then skipped by Spark's
    ``ignoreMissingFiles``, which logs each on its executor) or on Spark Connect."""
    from sql_dl.backends import backend_for

    return backend_for(spark).skipped_file_count()
