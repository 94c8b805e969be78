"""How ``sql-dl serve`` shares a bootstrapped manifest with every Thrift Server session:
functions injected into new sessions, image views and system views as persistent views in
the metastore (`SharedCatalog`), and the executor-reading system views refreshed after
statements (`ExecutorViewRefresh`).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid

from sql_dl.driver.indexes import INDEXES_SOURCE
from sql_dl.driver.registration import registered_catalogs, registered_indexes, registered_names
from sql_dl.driver.views import CATALOG_SOURCE, VIEWS_SOURCE, catalog_options, view_query
from sql_dl.manifest import Manifest
from sql_dl.rules import CACHE_VIEW, DEVICES_VIEW, INDEXES_VIEW, MODELS_VIEW, VIEWS_VIEW
from sql_dl.spark import internals as spark_internals
from sql_dl.sql_text import identifier, string_literal, values_query

__all__ = ["CACHE_VIEW_REFRESH", "INTERNAL_DATABASE", "ExecutorViewRefresh", "SharedCatalog"]

logger = logging.getLogger(__name__)

INTERNAL_DATABASE = "sql_dl_internal"
CACHE_VIEW_REFRESH = 5.0  # seconds: sql_dl_cache and sql_dl_devices refreshed at most this often
_PUBLISHED_CONF = "sql_dl.publishedViews"


class SharedCatalog:
    """Makes a bootstrapped manifest visible to every Thrift Server session, open ones
    included.

    Functions are injected into sessions created from now on. Views are persistent views in
    the metastore, which every session reads anew at each query. A reload never replaces a
    table in place: each publication reads its folders through new tables (of the folders'
    catalogs) and only then drops the previous ones, because open sessions cache the
    relation of a table they have read. ``sql_dl_models`` holds its rows in its own definition.
    """

    def __init__(self, spark):
        self.spark = spark
        self.lock = threading.RLock()  # publish (main thread) and refresh_executor_views (its own)

    def publish(self, manifest: Manifest) -> None:
        with self.lock:
            self._publish(manifest)

    def _publish(self, manifest: Manifest) -> None:
        functions, views = registered_names(self.spark)
        spark_internals.injected_functions(self.spark).clear()
        for name in functions:
            spark_internals.inject_session_function(self.spark, name)
        spark_internals.inject_table_functions(self.spark, registered_indexes(self.spark))
        if not self.spark.catalog.databaseExists(INTERNAL_DATABASE):
            self.spark.sql(f"CREATE DATABASE {INTERNAL_DATABASE}")
        old_tables = [t.name for t in self.spark.catalog.listTables(INTERNAL_DATABASE)]
        for name in self._published_views() - set(views):
            self.spark.sql(f"DROP VIEW IF EXISTS default.{identifier(name)}")
        for spec in manifest.images.values():
            self._publish_view(spec)
        self._publish_rows(MODELS_VIEW, self.spark.table(MODELS_VIEW).collect())
        self._publish_catalogs()
        self._publish_indexes()
        self.refresh_executor_views()
        self.spark.conf.set(_PUBLISHED_CONF, ",".join(sorted(views)))
        for table in old_tables:
            self.spark.sql(f"DROP TABLE IF EXISTS {INTERNAL_DATABASE}.{identifier(table)}")

    def refresh_executor_views(self) -> None:
        """Rewrites ``default.sql_dl_cache`` and ``default.sql_dl_devices`` with the
        executors' numbers now (two short Spark jobs: one task per core)."""
        rows = {view: self.spark.table(view).collect()  # the jobs, outside the lock
                for view in (CACHE_VIEW, DEVICES_VIEW)}
        with self.lock:
            for view, view_rows in rows.items():
                self._publish_rows(view, view_rows)

    def _publish_rows(self, view: str, rows: list) -> None:
        """``default.<view>``: the rows of the session's temporary view ``view``, as literals."""
        fields = self.spark.table(view).schema.fields
        columns = [(f.name, f.dataType.simpleString()) for f in fields]
        # ALTER VIEW changes the view in place; CREATE OR REPLACE drops it first, and a query
        # of another session between the two would not find it
        verb = ("ALTER VIEW" if self.spark.catalog.tableExists(f"default.{view}")
                else "CREATE VIEW")
        self.spark.sql(f"{verb} default.{view} AS {values_query(columns, rows)}")

    def _publish_catalogs(self) -> None:
        """``default.sql_dl_views``, read from the image catalogs at each query."""
        self._publish_source(VIEWS_VIEW, VIEWS_SOURCE, "views", registered_catalogs(self.spark))

    def _publish_source(self, view: str, source: str, option: str, value) -> None:
        """``default.<view>`` over a new table of the data source ``source``, whose option
        ``option`` is ``value`` as JSON."""
        table = f"{INTERNAL_DATABASE}.{identifier(f'{option}_{uuid.uuid4().hex[:8]}')}"
        # an external table (its path is not read): a managed one would get a folder
        warehouse = self.spark.conf.get("spark.sql.warehouse.dir")
        self.spark.sql(f"CREATE TABLE {table} USING {source} OPTIONS ({option} "
                       f"{string_literal(json.dumps(value))}, path {string_literal(warehouse)})")
        self.spark.sql(f"CREATE OR REPLACE VIEW default.{view} AS SELECT * FROM {table}")

    def _publish_indexes(self) -> None:
        """``default.sql_dl_indexes``, read from the indexes at each query."""
        self._publish_source(INDEXES_VIEW, INDEXES_SOURCE, "indexes",
                             registered_indexes(self.spark))

    def _published_views(self) -> set[str]:
        return set(filter(None, self.spark.conf.get(_PUBLISHED_CONF, "").split(",")))

    def _publish_view(self, spec) -> None:
        """``default.<view>`` over a new table of the view's folder's catalog (sql-dl serve
        needs sql_dl's extension)."""
        table = f"{INTERNAL_DATABASE}.{identifier(f'files_{spec.name}_{uuid.uuid4().hex[:8]}')}"
        listed = ", ".join(f"{identifier(k)} {string_literal(v)}"
                           for k, v in catalog_options(spec).items())
        self.spark.sql(f"CREATE TABLE {table} USING {CATALOG_SOURCE} OPTIONS ({listed})")
        self.spark.catalog.dropTempView(spec.name)
        self.spark.sql(f"CREATE OR REPLACE VIEW default.{identifier(spec.name)} AS "
                       f"{view_query(spec, table)}")


class ExecutorViewRefresh(threading.Thread):
    """Refreshes ``sql_dl_cache`` and ``sql_dl_devices`` after statements end (`poke`), at
    most every `CACHE_VIEW_REFRESH` seconds, in a thread of its own: its jobs may wait for
    cores that queries hold, and must delay neither them, nor the query log, nor a stop."""

    def __init__(self, catalog: SharedCatalog):
        super().__init__(name="sql_dl-cache-view", daemon=True)
        self.catalog = catalog
        self.poked = threading.Event()
        self.stopped = threading.Event()

    def poke(self) -> None:
        self.poked.set()

    def stop(self) -> None:
        self.stopped.set()
        self.poked.set()

    def run(self) -> None:
        while self.poked.wait() and not self.stopped.is_set():
            self.poked.clear()
            try:
                self.catalog.refresh_executor_views()
            except Exception as e:  # noqa: BLE001 - a stale view must never stop the server
                if not self.stopped.is_set():
                    logger.warning("sql_dl_cache and sql_dl_devices not refreshed: %s",
                                   str(e).splitlines()[0])
            self.stopped.wait(CACHE_VIEW_REFRESH)
