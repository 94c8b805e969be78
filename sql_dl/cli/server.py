"""``sql-dl serve``: the manifest's functions and views over JDBC/ODBC (Spark Thrift Server).

Every connection gets its own Spark session, as the Thrift Server normally does. So that
each sees the manifest without running anything first:

- functions: the Python UDFs registered in the root session are injected into the root
  session's ``SparkSessionExtensions``, which every session created later applies;
- views: image views and ``sql_dl_models`` become persistent views in the metastore (see
  `SharedCatalog`); so do ``sql_dl_cache`` and ``sql_dl_devices``, whose rows the server
  refreshes after statements (a persistent view cannot call the Python function that reads
  the executors).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Mapping

from sql_dl import spark_internals
from sql_dl.cli.audit import SECRET_KEY, AuditLog, Redactor
from sql_dl.cli.query_log import QueryLog
from sql_dl.errors import SparkInternalsError, SqlDlError
from sql_dl.manifest import Manifest, load_manifest
from sql_dl.sql_text import identifier, string_literal, values_query
from sql_dl.views import view_options, view_query

__all__ = ["ServerError", "check_authentication", "check_bind_address", "serve"]

logger = logging.getLogger(__name__)

INTERNAL_DATABASE = "sql_dl_internal"
CACHE_VIEW_REFRESH = 5.0  # seconds: sql_dl_cache and sql_dl_devices refreshed at most this often
_PUBLISHED_CONF = "sql_dl.publishedViews"
READY_TIMEOUT = 120.0
_NO_AUTH = ("NONE", "NOSASL")
_REQUIRED_SETTINGS = {
    "LDAP": ("hive.server2.authentication.ldap.url",),
    "CUSTOM": ("hive.server2.custom.authentication.class",),
    "KERBEROS": ("hive.server2.authentication.kerberos.principal",
                 "hive.server2.authentication.kerberos.keytab"),
}


class ServerError(SqlDlError, RuntimeError):
    """The server cannot start as asked; the message says why and what to change."""


def check_bind_address(host: str, hive_conf: Mapping[str, str], insecure: bool) -> None:
    """Refuses a non-loopback address without authentication, unless ``insecure``.

    Raises:
        ServerError: naming the address and the two ways to proceed.
    """
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError) as e:
        raise ServerError(f"cannot resolve --host {host!r}: {e}") from e
    authentication = hive_conf.get("hive.server2.authentication", "NONE").upper()
    if (not address.is_loopback and authentication in ("LDAP", "CUSTOM")
            and hive_conf.get("hive.server2.use.SSL", "false").lower() != "true"):
        logger.warning("hive.server2.authentication=%s on %s without hive.server2.use.SSL=true: "
                       "clients send their passwords in clear text", authentication, host)
    if address.is_loopback or authentication not in _NO_AUTH or insecure:
        return
    raise ServerError(
        f"refusing to listen on {host} ({address}), which is not a loopback address, without "
        "authentication: anyone who reaches it could run SQL. Configure authentication "
        "(--hiveconf hive.server2.authentication=LDAP|CUSTOM|KERBEROS with its settings), or "
        f"pass --insecure to accept the risk. Received: --host {host}, "
        f"hive.server2.authentication={authentication}")


def check_authentication(hive_conf: Mapping[str, str]) -> None:
    """Refuses an authentication mode without the settings it needs, which HiveServer2 would
    only notice at the first connection (as a refused login or a server-side error).

    Raises:
        ServerError: naming the mode and the missing settings.
    """
    authentication = hive_conf.get("hive.server2.authentication", "NONE").upper()
    missing = [key for key in _REQUIRED_SETTINGS.get(authentication, ())
               if not hive_conf.get(key, "").strip()]
    if authentication == "LDAP" and not any(hive_conf.get(key, "").strip() for key in (
            "hive.server2.authentication.ldap.baseDN",
            "hive.server2.authentication.ldap.userDNPattern",
            "hive.server2.authentication.ldap.Domain")):
        missing.append("hive.server2.authentication.ldap.baseDN (or .userDNPattern, or .Domain)")
    if missing:
        raise ServerError(
            f"hive.server2.authentication={authentication} needs "
            f"{' and '.join(f'--hiveconf {key}=...' for key in missing)}. Received: "
            + ", ".join(f"{k}={'***' if SECRET_KEY.search(k) else v}"
                        for k, v in sorted(hive_conf.items())))


def jdbc_url(host: str, port: int, hive_conf: Mapping[str, str]) -> str:
    """The JDBC URL clients use, with the transport and TLS settings they need."""
    url = f"jdbc:hive2://{host}:{port}/"
    if hive_conf.get("hive.server2.transport.mode", "binary").lower() == "http":
        path = hive_conf.get("hive.server2.thrift.http.path", "cliservice")
        url += f";transportMode=http;httpPath={path}"
    if hive_conf.get("hive.server2.use.SSL", "false").lower() == "true":
        url += ";ssl=true"
    return url


def server_conf(host: str, port: int, hive_conf: Mapping[str, str]) -> dict[str, str]:
    """Spark settings that carry the HiveServer2 settings to the Thrift Server."""
    settings = {f"spark.hadoop.{k}": v for k, v in hive_conf.items()}
    settings.update({
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.thrift.http.port": str(port),
        "spark.sql.hive.thriftServer.singleSession": "false",
    })
    return settings


class SharedCatalog:
    """Makes a bootstrapped manifest visible to every Thrift Server session, open ones
    included.

    Functions are injected into sessions created from now on. Views are persistent views in
    the metastore, which every session reads anew at each query. A reload never replaces a
    table in place: each publication reads its folders through new ``binaryFile`` tables and
    only then drops the previous ones, because open sessions cache the file listing of a
    table they have read. ``sql_dl_models`` holds its rows in its own definition.
    """

    def __init__(self, spark):
        self.spark = spark
        self.lock = threading.RLock()  # publish (main thread) and refresh_executor_views (its own)

    def publish(self, manifest: Manifest) -> None:
        with self.lock:
            self._publish(manifest)

    def _publish(self, manifest: Manifest) -> None:
        from sql_dl.registration import MODELS_VIEW, registered_names

        functions, views = registered_names(self.spark)
        spark_internals.injected_functions(self.spark).clear()
        for name in functions:
            spark_internals.inject_session_function(self.spark, name)
        if not self.spark.catalog.databaseExists(INTERNAL_DATABASE):
            self.spark.sql(f"CREATE DATABASE {INTERNAL_DATABASE}")
        old_tables = [t.name for t in self.spark.catalog.listTables(INTERNAL_DATABASE)]
        for name in self._published_views() - set(views):
            self.spark.sql(f"DROP VIEW IF EXISTS default.{identifier(name)}")
        for spec in manifest.images.values():
            self._publish_view(spec)
        self._publish_rows(MODELS_VIEW, self.spark.table(MODELS_VIEW).collect())
        self.refresh_executor_views()
        self.spark.conf.set(_PUBLISHED_CONF, ",".join(sorted(views)))
        for table in old_tables:
            self.spark.sql(f"DROP TABLE IF EXISTS {INTERNAL_DATABASE}.{identifier(table)}")

    def refresh_executor_views(self) -> None:
        """Rewrites ``default.sql_dl_cache`` and ``default.sql_dl_devices`` with the
        executors' numbers now (two short Spark jobs: one task per core)."""
        from sql_dl.devices import DEVICES_VIEW
        from sql_dl.prediction_cache import CACHE_VIEW

        rows = {view: self.spark.table(view).collect()  # the jobs, outside the lock
                for view in (CACHE_VIEW, DEVICES_VIEW)}
        with self.lock:
            for view, view_rows in rows.items():
                self._publish_rows(view, view_rows)

    def _publish_rows(self, view: str, rows: list) -> None:
        """``default.<view>``: the rows of the session's temporary view ``view``, as literals."""
        fields = self.spark.table(view).schema.fields
        columns = [(f.name, f.dataType.simpleString()) for f in fields]
        self.spark.sql(f"CREATE OR REPLACE VIEW default.{view} AS {values_query(columns, rows)}")

    def _published_views(self) -> set[str]:
        return set(filter(None, self.spark.conf.get(_PUBLISHED_CONF, "").split(",")))

    def _publish_view(self, spec) -> None:
        from sql_dl.registration import view_tasks

        table = f"{INTERNAL_DATABASE}.{identifier(f'files_{spec.name}_{uuid.uuid4().hex[:8]}')}"
        options = ", ".join(f"{identifier(k)} {string_literal(v)}"
                            for k, v in view_options(spec).items())
        self.spark.sql(f"CREATE TABLE {table} USING binaryFile OPTIONS ({options})")
        self.spark.catalog.dropTempView(spec.name)
        tasks = view_tasks(self.spark).get(spec.name)  # as bootstrap counted: no new listing
        self.spark.sql(f"CREATE OR REPLACE VIEW default.{identifier(spec.name)} AS "
                       f"{view_query(spec, table, tasks=tasks)}")


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


def serve(manifest: str | os.PathLike, host: str = "127.0.0.1", port: int = 10000,
          master: str | None = None, conf: Mapping[str, str] | None = None,
          hive_conf: Mapping[str, str] | None = None, insecure: bool = False,
          home: str | None = None, announce=print, audit_log: str | os.PathLike | None = None,
          audit_max_bytes: int = 100 * 1024 ** 2, audit_backups: int = 10) -> int:
    """Runs the Thrift Server until SIGTERM or SIGINT; SIGHUP re-reads the manifest.

    ``announce`` gets one line when the server accepts connections (``ready: <JDBC URL>``)
    and one after each reload (``reloaded: <manifest>`` or ``reload failed: <manifest>``).
    With ``audit_log``, each statement gets a JSON line there (see `sql_dl.cli.audit`).

    Returns:
        The exit code: 0 after a clean stop.
    """
    from sql_dl.keep_warm import keep_warm
    from sql_dl.registration import bootstrap
    from sql_dl.session import session

    hive_conf = dict(hive_conf or {})
    check_authentication(hive_conf)
    check_bind_address(host, hive_conf, insecure)
    loaded = load_manifest(manifest)
    audit = _open_audit_log(audit_log, audit_max_bytes, audit_backups) if audit_log else None
    spark = session(master=master, conf={**server_conf(host, port, hive_conf), **(conf or {})},
                    home=home)
    spark_internals.set_hive_server_properties(spark, hive_conf)
    try:
        redact = Redactor.for_settings(  # hive_conf is there too, as spark.hadoop.*
            dict(spark.sparkContext.getConf().getAll()),
            pattern=spark.conf.get("spark.sql.redaction.string.regex", None))
    except ValueError as e:
        raise ServerError(str(e)) from e
    catalog = SharedCatalog(spark)
    bootstrap(spark, loaded, warm_up=True)
    catalog.publish(loaded)
    server = spark_internals.start_thrift_server(spark)
    _install_operations(spark, server, audit=audit is not None)
    keeping = keep_warm(spark)  # through idle minutes, and after previews (see keep_warm)
    cache_view = ExecutorViewRefresh(catalog)
    cache_view.start()
    try:
        query_log = QueryLog.start_if_possible(
            spark, redact, audit, on_finish=lambda: (keeping.poke(), cache_view.poke()))
    except SparkInternalsError as e:
        raise ServerError(f"--audit-log needs Spark's records of statements: {e}") from e
    _wait_until_listening(host, port)
    announce(f"ready: {jdbc_url(host, port, hive_conf)}", flush=True)

    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    while not stop.is_set():
        if reload.wait(0.5):
            reload.clear()
            ok = _reload(spark, catalog, manifest)
            announce(f"{'reloaded' if ok else 'reload failed'}: {manifest}", flush=True)
    logger.info("Stopping: cancelling running queries")
    cache_view.stopped.set()
    cache_view.poke()
    try:  # the cancelled queries' traces are expected
        spark_internals.silence_jvm_log(spark.sparkContext._jvm)
    except SparkInternalsError as e:
        logger.warning("%s", e)
    keeping.stop()
    spark.sparkContext.cancelAllJobs()
    server.stop()
    if query_log is not None:
        query_log.stop()
    spark.stop()
    return 0


def _open_audit_log(path, max_bytes: int, backups: int) -> AuditLog:
    try:
        return AuditLog(path, max_bytes, backups)
    except OSError as e:
        raise ServerError(f"cannot open the audit log: {e}. Received: --audit-log {path}") from e


def _install_operations(spark, server, audit: bool) -> None:
    """JDBC getFunctions with each function once and, with ``audit``, statements that keep
    what the audit log needs, when sql_dl's jar is loaded (bootstrap has said so once if it
    is not).

    Raises:
        ServerError: with ``audit``, when they cannot be installed.
    """
    from py4j.protocol import Py4JJavaError

    from sql_dl.spark_extension import extension_active

    try:
        if not extension_active(spark):
            raise SparkInternalsError("sql_dl's Spark extension (sql_dl/jars) is not loaded")
        spark_internals.install_operation_manager(spark, server, audit)
    except (SparkInternalsError, Py4JJavaError) as e:
        if audit:
            raise ServerError(f"--audit-log needs sql_dl's statement records: {e}") from e
        logger.warning("JDBC getFunctions lists functions as Spark does: %s", e)


def _reload(spark, catalog: SharedCatalog, manifest) -> bool:
    from sql_dl.registration import bootstrap

    try:
        loaded = bootstrap(spark, manifest)
    except Exception as e:  # a bad manifest must never stop a running server
        logger.error("Reload failed; the previous definitions stay:\n%s", e)
        return False
    catalog.publish(loaded)
    logger.info("Reloaded %s: new connections see the new functions; views changed for all",
                manifest)
    return True


def _wait_until_listening(host: str, port: int) -> None:
    """Waits until the port is taken, without connecting to it (a plain connection to a TLS
    port would make the server log a failed handshake)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return
                raise
        time.sleep(0.2)
    raise ServerError(f"the Thrift Server did not listen on {host}:{port} within "
                      f"{READY_TIMEOUT:.0f} s; see the Spark log above. Received: --port {port}")
