"""``read_images``: image files as a DataFrame, as sparkdl's ``readImages`` gave them."""

from __future__ import annotations

from sql_dl.driver.views import image_frame
from sql_dl.executor.udfs import image_error_udf
from sql_dl.manifest import ImageViewSpec
from sql_dl.ml._params import check
from sql_dl.rules import (MAX_PIXELS, max_pixels_problem, positive_int_problem,
                          sample_ratio_problem)

__all__ = ["read_images"]


def read_images(spark, path: str, recursive: bool = True, sample_ratio: float = 1.0,
                num_partitions: int | None = None, drop_invalid: bool = False,
                seed: int | None = None, max_pixels: int = MAX_PIXELS):
    """Reads image files into a DataFrame, without decoding them.

    Args:
        spark: the SparkSession.
        path: a directory or glob; any Hadoop URI.
        recursive: whether to read sub-directories.
        sample_ratio: the fraction of files to keep, in (0, 1].
        num_partitions: repartition the result into this many partitions.
        drop_invalid: drop files Keras's ``load_img`` cannot decode (this decodes each file
            once; without it, models give NULL for such files).
        seed: the sampling seed (default 0).
        max_pixels: with ``drop_invalid``, also drop images of more pixels than this
            (refused from their header, before decoding).

    Returns:
        A DataFrame with ``path``, ``label`` (the parent directory's name), ``image``
        (the encoded bytes), ``length`` and ``modification_time``. The files are those
        listed now (a snapshot, like any DataFrame read from files); one deleted later
        gives no row instead of a failed query. Image views of a manifest, unlike this,
        list their folder at every query.

    Raises:
        FunctionArgumentError: an argument is out of range; the message names it.
    """
    check("read_images", "sample_ratio", sample_ratio, sample_ratio_problem(sample_ratio))
    check("read_images", "max_pixels", max_pixels, max_pixels_problem(max_pixels))
    if num_partitions is not None:
        check("read_images", "num_partitions", num_partitions, positive_int_problem(num_partitions))
    spec = ImageViewSpec(name="images", path=path, recursive=recursive, sample_ratio=sample_ratio)
    frame = image_frame(spark, spec, "read_images", seed or 0, snapshot=True)
    if drop_invalid:
        frame = frame.where(image_error_udf(max_pixels)("image").isNull())
    return frame.repartition(num_partitions) if num_partitions else frame
