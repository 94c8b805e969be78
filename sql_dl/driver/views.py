"""Image views: an image folder as a DataFrame of ``path, label, image, length,
modification_time``.

With sql_dl's Spark extension (every session sql_dl builds), a view reads the folder's
*catalog* (`CATALOG_SOURCE`, ``jvm/src/sql_dl/spark/catalog``): its listing kept as Parquet
data and brought up to date as each query starts, listing again only the folders that
changed; ``image`` is read by path for the rows a query needs, in as many tasks as they
need. Without the extension (and for `sql_dl.ml.read_images`, a snapshot like any
DataFrame read from files), a view is Spark's ``binaryFile`` source, listed once.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

from sql_dl.errors import ManifestError
from sql_dl.manifest import ImageViewSpec, is_local, local_path
from sql_dl.object_stores import connector_problem, is_built_in, scheme_of
from sql_dl.spark.backends import backend_for
from sql_dl.spark.extension import extension_active
from sql_dl.sql_text import values_query

__all__ = ["CATALOG_SOURCE", "VIEWS_SOURCE", "catalog_options",
           "image_frame", "view_columns", "view_query", "views_frame"]

CATALOG_SOURCE = "sql_dl.spark.catalog.CatalogSource"
VIEWS_SOURCE = "sql_dl.spark.catalog.ViewsSource"
# read by the extension (jvm/src/sql_dl/spark/catalog), which names them the same
_STALENESS_OPTION = "sql_dl.max_staleness_ms"
_IMAGES_PER_TASK_OPTION = "sql_dl.images_per_task"
_GLOB_CHARACTERS = "*?[{"


def catalog_options(spec: ImageViewSpec) -> dict[str, str]:
    """The options of an image view's catalog relation (`CATALOG_SOURCE`)."""
    options = {"path": spec.path, "recursiveFileLookup": str(spec.recursive).lower(),
               _STALENESS_OPTION: str(round(spec.max_staleness * 1000)),
               _IMAGES_PER_TASK_OPTION: str(spec.images_per_task)}
    name_glob = _name_glob(spec)
    if name_glob:
        options["pathGlobFilter"] = name_glob
    return options


def _name_glob(spec: ImageViewSpec) -> str | None:
    """The view's file name pattern: its ``glob``, or one matching its ``extensions`` in any
    case (``*.{[jJ][pP][gG],...}``: Hadoop's patterns, which Spark and the catalog apply,
    have no case-insensitive form)."""
    if spec.glob or not spec.extensions:
        return spec.glob
    either = ("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in e)
              for e in spec.extensions)
    return f"*.{{{','.join(either)}}}"


def _label(spec: ImageViewSpec) -> str:
    """The view's ``label``: the name of each file's folder, NULL for the files directly in
    the folder the view lists (where a glob starts, for a glob path), or NULL for all.

    A file is directly in that folder when its path has one ``/``-part more than the
    folder's. Paths are compared in parts, not as text: Spark qualifies them
    (``/data`` is ``file:/data``, ``hdfs:///data`` is ``hdfs://namenode:8020/data``) without
    changing their number of parts.
    """
    if spec.label == "none":
        return "CAST(NULL AS STRING)"
    path = spec.path
    cut = min((path.index(c) for c in _GLOB_CHARACTERS if c in path), default=None)
    root = path if cut is None else path[:path.rindex("/", 0, cut) if "/" in path[:cut] else 0]
    if is_local(root):
        root = "file:" + local_path(root)  # as Spark qualifies it
    parts = len(root.rstrip("/").split("/")) + 1
    return (f"CASE WHEN size(split(path, '/')) > {parts} "
            "THEN element_at(split(path, '/'), -2) END")


def view_columns(spec: ImageViewSpec, seed: int = 0) -> tuple[list[str], str | None]:
    """The columns of an image view over its catalog relation, as SQL expressions, and the
    condition of its ``sample_ratio`` (None: every row)."""
    sample = f"rand({int(seed)}) < {spec.sample_ratio!r}" if spec.sample_ratio < 1.0 else None
    return (["path", f"{_label(spec)} AS label", "image", "length", "modification_time"],
            sample)


def view_query(spec: ImageViewSpec, source: str, seed: int = 0, tasks: int | None = None,
               catalog: bool = True) -> str:
    """The SELECT that turns the rows of ``source`` (a catalog relation, or with ``catalog``
    False a ``binaryFile`` one, read in ``tasks`` tasks) into an image view."""
    columns, condition = view_columns(spec, seed)
    sample = f" WHERE {condition}" if condition else ""
    if catalog:
        return f"SELECT {', '.join(columns)} FROM {source}{sample}"
    hint = f"/*+ COALESCE({tasks}) */ " if tasks else ""
    return (f"SELECT {hint}path, {_label(spec)} AS label, content AS image, length, "
            f"modificationTime AS modification_time FROM {source}{sample}")


def image_frame(spark, spec: ImageViewSpec, source: str, seed: int = 0,
                snapshot: bool = False):
    """An image view's DataFrame (``path, label, image, length, modification_time``): over
    its catalog, or (without the extension, or with
    ``snapshot``) over ``binaryFile``, listed now and read in one task per core at least.

    The catalog relation is made at once; the catalog is built (or loaded and brought up to
    date) in the background, and the first query that needs it waits for it.

    Raises:
        ManifestError: the folder does not exist or cannot be read.
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import AnalysisException

    catalog = extension_active(spark) and not snapshot
    _check_file_system(spark, spec, source)
    try:
        if catalog:
            files = spark.read.format(CATALOG_SOURCE).options(**catalog_options(spec)).load()
        else:
            options = {"path": spec.path, "recursiveFileLookup": str(spec.recursive).lower(),
                       "ignoreMissingFiles": "true"}
            if _name_glob(spec):
                options["pathGlobFilter"] = _name_glob(spec)
            files = spark.read.format("binaryFile").options(**options).load()
    except (AnalysisException, Py4JJavaError) as e:
        raise ManifestError(f"{source}: images.{spec.name}.path: cannot list the folder: "
                            f"{_first_line(e)}; check the path. "
                            f"Received: path={spec.path!r}") from e
    tasks = None if catalog else _read_tasks(spark, files, spec.images_per_task)
    return spark.sql(view_query(spec, "{files}", seed, tasks, catalog), files=files)


def _check_file_system(spark, spec: ImageViewSpec, source: str) -> None:
    """Raises a ManifestError naming the connector to add when Spark has no Hadoop
    FileSystem for the scheme of the view's path (an object store's is not in pyspark)."""
    scheme = scheme_of(spec.path)
    if is_built_in(scheme) or not hasattr(spark, "_jsparkSession"):  # Connect: the server's
        return
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    try:
        jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(
            scheme, spark._jsparkSession.sessionState().newHadoopConf())
    except Py4JJavaError as e:  # no FileSystem for the scheme, or its class is not there
        raise ManifestError(connector_problem(
            f"{source}: images.{spec.name}.path", spec.path,
            jvm.org.apache.hadoop.util.VersionInfo.getVersion())) from e


def views_frame(spark, catalogs: Mapping[str, Mapping[str, str]]):
    """``sql_dl_views``: each image view's catalog as it is when queried (`VIEWS_SOURCE`);
    ``catalogs`` are the views' `catalog_options`. Without sql_dl's extension, the views and
    their folders, with state ``binaryFile`` (listed by Spark at bootstrap)."""
    if extension_active(spark):
        return (spark.read.format(VIEWS_SOURCE)
                .option("views", json.dumps({k: dict(v) for k, v in catalogs.items()})).load())
    rows = [(name, options["path"], "binaryFile") for name, options in sorted(catalogs.items())]
    return spark.sql(values_query([("view", "string"), ("path", "string"), ("state", "string")],
                                  rows))


def _read_tasks(spark, files, images_per_task: int) -> int | None:
    """How many tasks a ``binaryFile`` view is read in: one per core at least, and more only
    past ``images_per_task`` files each (Spark's default packs ~32 small files per task)."""
    parallelism = backend_for(spark).parallelism()
    if parallelism is None:
        return None
    return max(parallelism, math.ceil(len(files.inputFiles()) / images_per_task))


def _first_line(error: Exception) -> str:
    """The message of a Spark or JVM error, without its class and stack."""
    text = str(getattr(error, "java_exception", None) or error).strip()
    return text.splitlines()[0].split(": ", 1)[-1] if text else type(error).__name__
