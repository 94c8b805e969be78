"""Running totals of a session's work, read before and after a statement for its own counts:
images scored, answered from the prediction cache or not decodable, and image files
skipped because they were deleted after their folder was listed."""

from __future__ import annotations

from typing import NamedTuple

from sql_dl.backends import backend_for

__all__ = ["Counts", "bad_image_count", "counts", "scored_image_count", "skipped_file_count"]


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


def counts(spark) -> Counts:
    """The session's totals now."""
    backend = backend_for(spark)
    counter = backend.image_counter()
    value = counter.value if counter is not None else {}
    from sql_dl.udfs import ImageCounts

    return Counts(scored=value.get("scored", 0), cached=value.get("cached", 0),
                  bad=ImageCounts.bad_total(value) if value else 0,
                  skipped=backend.skipped_file_count() or 0)


def bad_image_count(spark) -> int | None:
    """How many images sql_dl's functions could not decode (each gave NULL) in this session.

    A running total over all queries since the session started: read it before and after a
    query for that query's count. Within one query each image counts once per function that
    read it, even when Spark's plan reads it twice. None on Spark Connect, which has no
    accumulators (each task still logs its count).
    """
    from sql_dl.udfs import ImageCounts

    counter = backend_for(spark).image_counter()
    return None if counter is None else ImageCounts.bad_total(counter.value)


def scored_image_count(spark) -> int | None:
    """How many images sql_dl's models have run on in this session: a running total, as
    `bad_image_count`. Work, not distinct images: an image scored twice (by two functions,
    or by a plan that reads it twice) counts twice. None on Spark Connect."""
    counter = backend_for(spark).image_counter()
    return None if counter is None else counter.value["scored"]


def skipped_file_count(spark) -> int | None:
    """How many image files listed for a query were deleted before it read them (each was
    skipped, and the driver's log names it once): a running total, as `bad_image_count`.
    None without sql_dl's Spark extension (such files are then skipped by Spark's
    ``ignoreMissingFiles``, which logs each on its executor) or on Spark Connect."""
    return backend_for(spark).skipped_file_count()
