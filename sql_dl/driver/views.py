"""Image views: an image folder as a DataFrame of ``path, label, image, length,
modification_time``, read in few large tasks."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from sql_dl.errors import ManifestError
from sql_dl.manifest import ImageViewSpec
from sql_dl.spark.backends import backend_for

__all__ = ["IMAGES_PER_TASK", "ImageView", "image_files", "image_frame", "read_tasks",
           "view_options", "view_query"]

IMAGES_PER_TASK = 1024
# read by the extension's LiveImageFolders rule (jvm/), which names them the same
STALENESS_OPTION = "sql_dl.max_staleness_ms"
IMAGES_PER_TASK_OPTION = "sql_dl.images_per_task"


class ImageView(NamedTuple):
    frame: Any  # the DataFrame: path, label, image, length, modification_time
    tasks: int | None  # how many tasks read it (see read_tasks)


def view_options(spec: ImageViewSpec, live: bool = True) -> dict[str, str]:
    """The ``binaryFile`` source options that list an image folder's files. A file deleted
    after the listing is skipped when read.

    ``live`` marks the relation for sql_dl's Spark extension (``LiveImageFolders``): each
    query then lists the folder anew (or reuses a listing younger than ``max_staleness``)
    and is read in as many tasks as that listing needs. Without the extension, or without
    ``live``, the listing of the first analysis is kept.
    """
    options = {"path": spec.path, "recursiveFileLookup": str(spec.recursive).lower(),
               "ignoreMissingFiles": "true"}
    if spec.glob:
        options["pathGlobFilter"] = spec.glob
    if live:
        options[STALENESS_OPTION] = str(round(spec.max_staleness * 1000))
        options[IMAGES_PER_TASK_OPTION] = str(IMAGES_PER_TASK)
    return options


def view_query(spec: ImageViewSpec, source: str, seed: int = 0, tasks: int | None = None) -> str:
    """The SELECT that turns ``binaryFile`` rows from ``source`` into an image view read in
    ``tasks`` tasks (Spark's choice when None)."""
    label = "element_at(split(path, '/'), -2)" if spec.label == "parent_dir" else "CAST(NULL AS STRING)"
    sample = f" WHERE rand({int(seed)}) < {spec.sample_ratio!r}" if spec.sample_ratio < 1.0 else ""
    hint = f"/*+ COALESCE({tasks}) */ " if tasks else ""
    return (f"SELECT {hint}path, {label} AS label, content AS image, length, "
            f"modificationTime AS modification_time FROM {source}{sample}")


def image_files(spark, spec: ImageViewSpec, source: str, live: bool = True):
    """The ``binaryFile`` DataFrame listing an image view's files (see `view_options`)."""
    from pyspark.errors import AnalysisException

    try:
        return spark.read.format("binaryFile").options(**view_options(spec, live)).load()
    except AnalysisException as e:
        raise ManifestError(f"{source}: images.{spec.name}.path: cannot list the folder: "
                            f"{str(e).splitlines()[0]}; check the path. "
                            f"Received: path={spec.path!r}") from e


def read_tasks(spark, files) -> int | None:
    """How many tasks an image view is read in: one per core at least, and more only past
    ``IMAGES_PER_TASK`` files each. Spark's default packs at most ~32 small files per task,
    and many short tasks leave the cores idle between model calls."""
    parallelism = backend_for(spark).parallelism()
    if parallelism is None:
        return None
    return max(parallelism, math.ceil(len(files.inputFiles()) / IMAGES_PER_TASK))


def image_frame(spark, spec: ImageViewSpec, source: str, seed: int = 0,
                live: bool = True) -> ImageView:
    """An image view's DataFrame, and the number of tasks its listing now needs."""
    files = image_files(spark, spec, source, live)
    tasks = read_tasks(spark, files)
    return ImageView(spark.sql(view_query(spec, "{files}", seed, tasks), files=files), tasks)
