"""Counts of a session's work, read on the driver: images scored, answered from the
prediction cache or not decodable (counted by the tasks of sql_dl's functions into one
accumulator per SparkContext, `image_counter`; see `sql_dl.executor.tally`), and image files
deleted after their folder was listed (their images are NULL) (counted by the Spark
extension).

Each count is a running total, read before and after a statement for its own counts; the
accumulator also keeps the counts of each recent statement, by its id, for the server's
query log, where statements overlap.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

from sql_dl.executor.tally import ImageCounts
from sql_dl.spark import internals
from sql_dl.spark.backends import is_connect
from sql_dl.spark.extension import extension_active

__all__ = ["Counts", "bad_image_count", "cached_image_count", "counts", "image_counter",
           "scored_image_count", "skipped_file_count", "statement_counts"]

_counters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per SparkContext


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
                         "was listed; their images are NULL (Spark's log names them)")
        if self.scored or self.cached:  # any statement that ran a model, cache or not
            lines.append(f"Images: {self.scored} scored, {self.cached} from the prediction cache")
        return lines


def image_counter(spark):
    """The accumulator the tasks of sql_dl's functions count into (an `ImageCounts`), one
    per SparkContext; None on Spark Connect, which has no accumulators (each task still
    logs its count)."""
    if is_connect(spark):
        return None
    context = spark.sparkContext
    if context not in _counters:
        counts = ImageCounts()
        _counters[context] = context.accumulator(counts.zero(None), counts)
    return _counters[context]


def _value(spark) -> dict | None:
    counter = image_counter(spark)
    return None if counter is None else counter.value


def counts(spark) -> Counts:
    """The session's totals now."""
    value = _value(spark) or {}
    return Counts(scored=value.get("scored", 0), cached=value.get("cached", 0),
                  bad=ImageCounts.bad_total(value) if value else 0,
                  skipped=skipped_file_count(spark) or 0)


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
    ``ignoreMissingFiles``, which logs each on its executor) or on Spark Connect (the
    server's driver log names them)."""
    if is_connect(spark) or not extension_active(spark):
        return None
    return internals.skipped_file_count(spark)
