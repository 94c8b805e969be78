"""``bootstrap``: a manifest's SQL functions and image views, registered in a Spark session."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from sql_dl.driver import keep_warm
from sql_dl.driver.counts import image_counter
from sql_dl.driver.function_docs import function_docs
from sql_dl.driver.indexes import drop_indexes, indexes_frame, register_indexes
from sql_dl.driver.models import plan_model
from sql_dl.driver.system_views import cache_frame, check_gpus, devices_frame
from sql_dl.driver.views import catalog_options, image_frame, views_frame
from sql_dl.errors import SqlDlWarning
from sql_dl.executor.probes import warm_up_udf
from sql_dl.executor.udfs import (PREPROCESSOR_BATCH, image_error_udf, image_info_udf,
                                  model_udf, preprocessor_udf, thumbnail_udf, top_k_udf)
from sql_dl.manifest import Manifest, load_manifest
from sql_dl.plans import ModelPlan
from sql_dl.rules import (CACHE_VIEW, DEVICES_VIEW, IMAGE_ERROR_FUNCTION, IMAGE_INFO_FUNCTION,
                          INDEXES_VIEW, MODELS_VIEW, THUMBNAIL_FUNCTION, VIEWS_VIEW)
from sql_dl.spark.backends import Backend, backend_for, is_connect, run_per_core
from sql_dl.spark.extension import check_extension, extension_active
from sql_dl.sql_text import identifier, values_query

__all__ = ["MODELS_COLUMNS", "bootstrap", "manifest_udfs", "registered_catalogs",
           "registered_indexes", "registered_names"]

logger = logging.getLogger(__name__)

_REGISTERED_CONF = "sql_dl.registered"
_ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
_SPARK_DEFAULT_ARROW_BATCH = "10000"
_ARROW_BATCH_SET_CONF = "sql_dl.arrowBatchSize"  # the value bootstrap set, to update it later
MODELS_COLUMNS = (("function", "string"), ("kind", "string"), ("model", "string"),
                  ("input", "string"), ("output_size", "int"), ("preprocessor", "string"),
                  ("source", "string"), ("description", "string"))
_BUILT_IN_ROWS = (
    (IMAGE_ERROR_FUNCTION, "image_error", None, "image", None, None,
     "why an image cannot be decoded, or NULL", None),
    (THUMBNAIL_FUNCTION, "thumbnail", None, "image", None, None,
     "the image as a data URL to display, or NULL", None),
    (IMAGE_INFO_FUNCTION, "image_info", None, "image", None, None,
     "format, mode, width, height and frames from the header, or NULL", None))


def bootstrap(spark, manifest: str | os.PathLike | Mapping[str, Any] | Manifest, *,
              replace: bool = True, warm_up: bool = False) -> Manifest:
    """Registers a manifest's SQL functions and image views in a Spark session.

    Every model and its weights, labels and input size are checked on the driver before
    anything is registered, so a bad manifest leaves the session as it was. Calling it
    again replaces the definitions of the previous call, dropping those no longer listed.

    Args:
        spark: the SparkSession, such as the one a notebook provides.
        manifest: a YAML file path, a dict of the same structure, or a loaded `Manifest`.
        replace: drop what earlier calls registered and this manifest does not list;
            False adds to (and overrides entries of) the earlier definitions.
        warm_up: load every model in a Python worker per core now (one short job), so the
            first query does not pay for starting TensorFlow and loading models.

    Returns:
        The validated manifest.

    Raises:
        ManifestError: the manifest is invalid, or an image folder cannot be read.
        ModelLoadError: a model, its weights or its labels cannot be loaded or do not fit.
    """
    started = time.monotonic()
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    backend = _prepared_backend(spark)
    # the models are planned (in Python: TensorFlow, the first time) while the JVM makes
    # the views' relations
    with ThreadPoolExecutor(1, thread_name_prefix="sql_dl-plan") as pool:
        planning = pool.submit(lambda: [plan_model(spec, manifest, backend.fetch)
                                        for spec in manifest.models.values()])
        try:
            views = {name: image_frame(spark, spec, manifest.source)
                     for name, spec in manifest.images.items()}
        finally:
            plans = planning.result()  # a model's error first: it comes first in the manifest
    functions, rows = _functions(spark, manifest, plans, backend)
    _register(spark, backend, manifest, plans, functions, views, rows, replace)
    _size_arrow_batches(spark, plans)
    if not is_connect(spark):  # keep-warm needs the SparkContext
        keep_warm.remember_models(spark, plans, replace)
    if warm_up and plans:
        _warm_up(spark, plans, backend.parallelism())
    logger.info("Bootstrapped %s (%s) in %.1f s", manifest.source, manifest.summary(),
                time.monotonic() - started)
    return manifest


def _prepared_backend(spark) -> Backend:
    """The session's backend, its workers' Python set; once per session, the extension and
    the executors' GPUs checked."""
    backend = backend_for(spark)
    backend.prepare()
    if not backend.worker_reuse():
        warnings.warn("spark.python.worker.reuse is false: every task loads its models again; "
                      "set it to true (sql_dl.session does)", SqlDlWarning, stacklevel=3)
    if not backend.extension_checked:
        backend.extension_checked = True
        check_extension(spark)
        check_gpus(spark)
    return backend


def _functions(spark, manifest: Manifest, plans: list[ModelPlan],
               backend: Backend) -> tuple[dict[str, Any], list]:
    """The manifest's UDFs by SQL name (models shipped), and their ``sql_dl_models`` rows."""
    for plan in plans:
        backend.ship_model(plan)
    return manifest_udfs(manifest, plans, image_counter(spark))


def manifest_udfs(manifest: Manifest, plans: list[ModelPlan],
                  counter=None) -> tuple[dict[str, Any], list]:
    """The manifest's UDFs by SQL name, and their ``sql_dl_models`` rows; ``counter`` is the
    accumulator their tasks count images into (None: they only log their counts)."""
    functions: dict[str, Any] = {IMAGE_ERROR_FUNCTION: image_error_udf(),
                                 THUMBNAIL_FUNCTION: thumbnail_udf(),
                                 IMAGE_INFO_FUNCTION: image_info_udf()}
    rows = list(_BUILT_IN_ROWS)
    for spec in manifest.preprocessors.values():
        functions[spec.name] = preprocessor_udf(spec, counter)
        rows.append((spec.name, "preprocessor", None, "image", spec.size[0] * spec.size[1] * 3,
                     spec.name, spec.function or f"mode={spec.mode}", spec.description))
    for plan in plans:
        name, features_name, top_k_name = manifest.models[plan.name].function_names
        functions[name] = model_udf(plan, counter=counter)
        functions[features_name] = model_udf(plan, features=True, counter=counter)
        functions[top_k_name] = top_k_udf(plan, counter)
        preprocessor = plan.preprocessor.name if plan.preprocessor else None
        for function_name, kind, size in ((name, "model", plan.output_size),
                                           (features_name, "features", plan.features_size),
                                           (top_k_name, "top_k", None)):
            rows.append((function_name, kind, plan.name, plan.input, size, preprocessor,
                         plan.source, manifest.models[plan.name].description))
    return functions, rows


def _register(spark, backend: Backend, manifest: Manifest, plans: list[ModelPlan],
              functions: dict[str, Any], views: dict[str, Any], rows: list,
              replace: bool) -> None:
    """Registers the functions (with their DESCRIBE FUNCTION text) and views, the system
    views, and what was registered, replacing or adding to the previous bootstrap's."""
    previous_functions, previous_views = registered_names(spark)
    catalogs = {name: catalog_options(spec) for name, spec in manifest.images.items()}
    if replace:
        _drop_previous(spark, set(previous_functions) - set(functions),
                       set(previous_views) - set(views))
    elif previous_functions:  # the rows of sql_dl_models so far
        rows += [tuple(r) for r in spark.table(MODELS_VIEW).collect()
                 if r.function not in functions]
        catalogs = {**_registered(spark).get("catalogs", {}), **catalogs}
    docs = function_docs(manifest, plans)
    for function_name, udf in functions.items():
        if function_name in previous_functions:  # replacing it would log a warning
            spark.sql(f"DROP TEMPORARY FUNCTION IF EXISTS {identifier(function_name)}")
        spark.udf.register(function_name, udf)
        backend.describe_function(function_name, docs[function_name])
    for name, view in views.items():
        view.createOrReplaceTempView(name)
    # from literals: createDataFrame of Python rows would start Python workers of their own
    spark.sql(values_query(MODELS_COLUMNS, rows)).createOrReplaceTempView(MODELS_VIEW)
    cache_frame(spark, backend.parallelism()).createOrReplaceTempView(CACHE_VIEW)
    devices_frame(spark, backend.parallelism()).createOrReplaceTempView(DEVICES_VIEW)
    views_frame(spark, catalogs).createOrReplaceTempView(VIEWS_VIEW)
    indexes = _register_indexes(spark, manifest, plans, replace)
    all_functions = set(functions) | set(() if replace else previous_functions)
    all_views = set(views) | set(() if replace else previous_views)
    spark.conf.set(_REGISTERED_CONF, json.dumps({
        "functions": sorted(all_functions), "views": sorted(all_views),
        "catalogs": catalogs, "indexes": indexes}))


def _register_indexes(spark, manifest: Manifest, plans: list[ModelPlan],
                      replace: bool) -> dict[str, str]:
    """Registers the manifest's indexes (their table functions) and ``sql_dl_indexes``;
    returns every index now registered, with its folder."""
    previous = _registered(spark).get("indexes", {})
    if manifest.indexes and (is_connect(spark) or not extension_active(spark)):
        warnings.warn(
            f"{manifest.source}: indexes {', '.join(manifest.indexes)} are not registered: "
            "an index's table function needs sql_dl's Spark extension in a classic session "
            "(sql_dl.session builds one; on Spark Connect, run the server in plugin mode, "
            "see sql-dl spark-conf)", SqlDlWarning, stacklevel=4)
        folders = {}
    else:
        folders = register_indexes(spark, manifest, plans)
    if replace:
        drop_indexes(spark, set(previous) - set(folders))
    else:
        folders = {**previous, **folders}
    indexes_frame(spark, folders).createOrReplaceTempView(INDEXES_VIEW)
    return folders


def _warm_up(spark, plans: list[ModelPlan], parallelism: int | None) -> None:
    """Loads every model in a Python worker per core (one short job)."""
    if not parallelism:
        return
    started = time.monotonic()
    run_per_core(spark, warm_up_udf(plans), parallelism)
    logger.info("Warmed up %d model(s) in %d Python worker(s) in %.1f s", len(plans),
                parallelism, time.monotonic() - started)


def _size_arrow_batches(spark, plans: list[ModelPlan]) -> None:
    """Sends rows to Python workers in Arrow batches of the largest model batch: a task's
    first model call then waits for one batch of images, not for Spark's 10,000 rows.
    A value the user set is kept."""
    current = spark.conf.get(_ARROW_BATCH_CONF)
    if current in (_SPARK_DEFAULT_ARROW_BATCH, spark.conf.get(_ARROW_BATCH_SET_CONF, None)):
        batch = str(max([plan.batch_size for plan in plans] + [PREPROCESSOR_BATCH]))
        spark.conf.set(_ARROW_BATCH_CONF, batch)
        spark.conf.set(_ARROW_BATCH_SET_CONF, batch)


def registered_catalogs(spark) -> dict[str, dict[str, str]]:
    """The catalog options of each image view the bootstrap of this session registered."""
    return _registered(spark).get("catalogs", {})


def registered_indexes(spark) -> dict[str, str]:
    """The indexes the bootstrap of this session registered, with their folders."""
    return _registered(spark).get("indexes", {})


def registered_names(spark) -> tuple[list[str], list[str]]:
    """The SQL functions and image views the last bootstrap of this session registered."""
    registered = _registered(spark)
    return registered.get("functions", []), registered.get("views", [])


def _registered(spark) -> dict[str, Any]:
    return json.loads(spark.conf.get(_REGISTERED_CONF, None) or "{}")


def _drop_previous(spark, functions: set[str], views: set[str]) -> None:
    """Drops what an earlier bootstrap of this session registered and this one does not."""
    for name in functions:
        spark.sql(f"DROP TEMPORARY FUNCTION IF EXISTS {identifier(name)}")
    for name in views:
        spark.catalog.dropTempView(name)
