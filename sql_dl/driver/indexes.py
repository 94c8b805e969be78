"""The manifest's embedding indexes (``indexes:``) in a Spark session: each index's table
function and the ``sql_dl_indexes`` system view, made by sql_dl's Spark extension
(``jvm/src/sql_dl/spark/similarity``), which keeps each index in a Python process on the
driver (`sql_dl.driver.index_service`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Mapping

from sql_dl.manifest import IndexSpec, Manifest
from sql_dl.plans import ModelPlan
from sql_dl.rules import MAX_NEIGHBOURS
from sql_dl.spark.extension import extension_active
from sql_dl.sql_text import values_query

__all__ = ["INDEXES_COLUMNS", "INDEXES_SOURCE", "drop_indexes", "index_specs",
           "indexes_frame", "register_indexes"]

INDEXES_SOURCE = "sql_dl.spark.similarity.IndexesSource"
# as IndexesSource gives them
INDEXES_COLUMNS = (("index", "string"), ("view", "string"), ("function", "string"),
                   ("metric", "string"), ("dimensions", "int"), ("state", "string"),
                   ("images", "bigint"), ("listed", "bigint"), ("pending", "bigint"),
                   ("last_update", "timestamp"), ("update_ms", "bigint"),
                   ("memory_bytes", "bigint"), ("directory", "string"), ("problem", "string"))
_DISTANCES = {"cosine": "1 - vector_cosine_similarity(query, vector)",
              "l2": "vector_l2_distance(query, vector)",
              "inner": "-vector_inner_product(query, vector)"}


def index_specs(manifest: Manifest, plans: list[ModelPlan],
                python: str | None = None) -> list[dict[str, Any]]:
    """What the extension registers for each index (``IndexFunction.register``): its view,
    function, metric and dimensions, the key of its folder (what its vectors depend on), the
    Python of its service, the view's staleness and its DESCRIBE FUNCTION text."""
    by_name = {plan.name: plan for plan in plans}
    return [_spec(spec, manifest, by_name[spec.model], python or sys.executable)
            for spec in manifest.indexes.values()]


def _spec(spec: IndexSpec, manifest: Manifest, plan: ModelPlan, python: str) -> dict[str, Any]:
    view = manifest.images[spec.view]
    dims = plan.features_size if spec.features else plan.output_size
    identity = {"view": [view.path, view.recursive, view.glob, view.extensions, view.label,
                         view.sample_ratio],
                "function": spec.function.lower(), "features": spec.features,
                "model": [plan.staged_name, plan.input_shape, plan.features_layer,
                          str(plan.preprocessor), plan.engine, plan.precision],
                "metric": spec.metric, "dims": dims}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    usage, arguments, examples = _docs(spec, dims)
    return {"name": spec.name, "view": spec.view, "function": spec.function,
            "metric": spec.metric, "dims": dims, "key": key[:16], "python": python,
            "staleness_ms": round(view.max_staleness * 1000), "description": spec.description,
            "usage": usage, "arguments": arguments, "examples": examples}


def _docs(spec: IndexSpec, dims: int) -> tuple[str, str, str]:
    """``DESCRIBE FUNCTION``'s text of an index's table function."""
    usage = (f"{spec.name}(query[, k]) - the k (default 10, at most {MAX_NEIGHBOURS}) images "
             f"of view {spec.view} nearest to query, by {spec.metric} distance between their "
             f"{spec.function} vectors ({dims} values; distance = "
             f"{_DISTANCES[spec.metric]}): path, label, distance, nearest first. "
             "Kept up to date with the view's folder; approximate (an HNSW graph), with exact "
             "distances.")
    if spec.description:
        usage += f" {spec.description}"
    arguments = ("\n    Arguments:\n"
                 f"      * query - an image (BINARY), the path of an image of {spec.view} "
                 f"(STRING), or a vector of {dims} values (ARRAY<FLOAT>); a scalar subquery "
                 "gives one\n"
                 f"      * k - how many images, from 1 to {MAX_NEIGHBOURS} (INT)\n  ")
    examples = ("\n    Examples:\n"
                f"      > SELECT * FROM {spec.name}((SELECT path FROM {spec.view} LIMIT 1), 5)\n"
                f"      > SELECT * FROM {spec.name}((SELECT image FROM {spec.view} "
                "WHERE path LIKE '%/cat.jpg'), 5)\n  ")
    return usage, arguments, examples


def register_indexes(spark, manifest: Manifest, plans: list[ModelPlan]) -> dict[str, str]:
    """Registers each index's table function in ``spark`` (whose image views and functions
    are registered); each starts following its view in the background. Returns each index's
    folder."""
    specs = index_specs(manifest, plans)
    if not specs:
        return {}
    jvm = spark.sparkContext._jvm
    folders = jvm.sql_dl.spark.similarity.IndexFunction.register(
        spark._jsparkSession, json.dumps(specs))
    return dict(json.loads(folders))


def drop_indexes(spark, names) -> None:
    """Drops the table functions of indexes an earlier bootstrap registered."""
    for name in names:
        spark.sparkContext._jvm.sql_dl.spark.similarity.IndexFunction.drop(
            spark._jsparkSession, name)


def indexes_frame(spark, folders: Mapping[str, str]):
    """``sql_dl_indexes``: each index's state as it is when queried (`INDEXES_SOURCE`);
    without sql_dl's extension, which indexes need, no rows."""
    if extension_active(spark):
        return (spark.read.format(INDEXES_SOURCE)
                .option("indexes", json.dumps(dict(folders))).load())
    return spark.sql(values_query(INDEXES_COLUMNS, []))
