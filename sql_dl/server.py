"""``sql-dl serve``: the manifest's functions and views over JDBC/ODBC (Spark Thrift Server).

Every connection gets its own Spark session, as the Thrift Server normally does. So that
each sees the manifest without running anything first:

- functions: the Python UDFs registered in the root session are injected into the root
  session's ``SparkSessionExtensions``, which every session created later applies;
- views: image views and ``sql_dl_models`` become persistent views in the metastore, over
  ``binaryFile`` tables kept in the ``sql_dl_internal`` database, recreated at start.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import threading
import time
from typing import Mapping

from sql_dl.errors import SqlDlError
from sql_dl.manifest import Manifest, load_manifest
from sql_dl.registration import bad_image_count

__all__ = ["ServerError", "check_bind_address", "serve"]

logger = logging.getLogger(__name__)

INTERNAL_DATABASE = "sql_dl_internal"
READY_TIMEOUT = 120.0
_NO_AUTH = ("NONE", "NOSASL")


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
    if address.is_loopback or authentication not in _NO_AUTH or insecure:
        return
    raise ServerError(
        f"refusing to listen on {host} ({address}), which is not a loopback address, without "
        "authentication: anyone who reaches it could run SQL. Configure authentication "
        "(--hiveconf hive.server2.authentication=LDAP|CUSTOM|KERBEROS with its settings), or "
        f"pass --insecure to accept the risk. Received: --host {host}, "
        f"hive.server2.authentication={authentication}")


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


class Publisher:
    """Makes a bootstrapped manifest visible to every Thrift Server session."""

    def __init__(self, spark):
        self.spark = spark
        self.jvm = spark.sparkContext._jvm

    def publish(self, manifest: Manifest, previous_views: list[str]) -> None:
        from sql_dl.registration import MODELS_VIEW, registered_names

        functions, views = registered_names(self.spark)
        self._injected_functions().clear()
        for name in functions:
            self._inject_function(name)
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {INTERNAL_DATABASE}")
        for name in set(previous_views) - set(views):
            self.spark.sql(f"DROP VIEW IF EXISTS default.`{name}`")
            self.spark.sql(f"DROP TABLE IF EXISTS {INTERNAL_DATABASE}.`files_{name}`")
        for spec in manifest.images.values():
            self._publish_view(spec)
        (self.spark.table(MODELS_VIEW).write.mode("overwrite")
         .saveAsTable(f"{INTERNAL_DATABASE}.models"))
        self.spark.sql(f"CREATE OR REPLACE VIEW default.{MODELS_VIEW} AS "
                       f"SELECT * FROM {INTERNAL_DATABASE}.models")

    def _injected_functions(self):
        """The extensions' list of injected functions, so a reload can also remove some.

        Spark offers no public way to take an injected function back; the list is a
        private field, reached through Java reflection.
        """
        extensions = self.spark._jsparkSession.extensions()
        for field in extensions.getClass().getDeclaredFields():
            if field.getName().endswith("injectedFunctions"):
                field.setAccessible(True)
                return field.get(extensions)
        raise ServerError("this Spark version keeps no injectedFunctions list in "
                          "SparkSessionExtensions; sql-dl serve cannot publish functions")

    def _inject_function(self, name: str) -> None:
        """Makes sessions created from now on apply the root session's function ``name``."""
        jvm = self.jvm
        session = self.spark._jsparkSession
        registry = session.sessionState().functionRegistry()
        qualified = jvm.org.apache.spark.sql.catalyst.FunctionIdentifier(
            name, jvm.scala.Some("session"), jvm.scala.Some("system"))
        info = registry.lookupFunction(qualified).get()
        builder = registry.lookupFunctionBuilder(qualified).get()
        unqualified = jvm.org.apache.spark.sql.catalyst.FunctionIdentifier(
            name, jvm.scala.Option.empty(), jvm.scala.Option.empty())
        session.extensions().injectFunction(jvm.scala.Tuple3(unqualified, info, builder))

    def _publish_view(self, spec) -> None:
        from sql_dl.registration import view_options, view_query, view_tasks

        table = f"{INTERNAL_DATABASE}.`files_{spec.name}`"
        options = ", ".join(f"`{k}` '{_quote(v)}'" for k, v in view_options(spec).items())
        self.spark.sql(f"DROP TABLE IF EXISTS {table}")
        self.spark.sql(f"CREATE TABLE {table} USING binaryFile OPTIONS ({options})")
        self.spark.catalog.dropTempView(spec.name)
        tasks = view_tasks(self.spark).get(spec.name)  # as bootstrap counted: no new listing
        self.spark.sql(f"CREATE OR REPLACE VIEW default.`{spec.name}` AS "
                       f"{view_query(spec, table, partitions=tasks)}")


class QueryLog(threading.Thread):
    """Logs each statement the server runs with the name of the user who sent it, and when
    it ends, how many images could not be decoded since the previous query ended.

    Reads the Thrift Server's own records of executions (as its UI does) once a second.
    Counts are exact when queries run one at a time; concurrent queries share them.
    """

    def __init__(self, spark, interval: float = 1.0):
        super().__init__(name="sql_dl-query-log", daemon=True)
        jvm = spark.sparkContext._jvm
        self.spark = spark
        self.store = jvm.org.apache.spark.sql.hive.thriftserver.ui.HiveThriftServer2AppStatusStore(
            spark.sparkContext._jsc.sc().statusStore().store())
        self.to_java = jvm.scala.jdk.javaapi.CollectionConverters.asJava
        self.interval = interval
        self.stopped = threading.Event()
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.bad_images = bad_image_count(spark) or 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        for execution in self.to_java(self.store.getExecutionList()):
            query = execution.execId()
            if query not in self.started:
                self.started.add(query)
                logger.info("query %s by user %s: %s", query, execution.userName(),
                            " ".join(execution.statement().split()))
            if query not in self.finished and execution.finishTimestamp() > 0:
                self.finished.add(query)
                total = bad_image_count(self.spark) or 0
                if total > self.bad_images:
                    logger.warning("query %s: %d image(s) could not be decoded and gave NULL",
                                   query, total - self.bad_images)
                self.bad_images = total


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def serve(manifest: str | os.PathLike, host: str = "127.0.0.1", port: int = 10000,
          master: str | None = None, conf: Mapping[str, str] | None = None,
          hive_conf: Mapping[str, str] | None = None, insecure: bool = False,
          home: str | None = None, announce=print) -> int:
    """Runs the Thrift Server until SIGTERM or SIGINT; SIGHUP re-reads the manifest.

    ``announce`` gets one line when the server accepts connections (``ready: <JDBC URL>``)
    and one after each reload (``reloaded: <manifest>`` or ``reload failed: <manifest>``).

    Returns:
        The exit code: 0 after a clean stop.
    """
    from sql_dl.registration import bootstrap, registered_names
    from sql_dl.session import session

    hive_conf = dict(hive_conf or {})
    check_bind_address(host, hive_conf, insecure)
    loaded = load_manifest(manifest)
    spark = session(master=master, conf={**server_conf(host, port, hive_conf), **(conf or {})},
                    home=home)
    publisher = Publisher(spark)
    bootstrap(spark, loaded, warm_up=True)
    publisher.publish(loaded, [])
    server = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
        spark._jsparkSession.sqlContext())
    query_log = QueryLog(spark)
    query_log.start()
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
            ok = _reload(spark, publisher, manifest, registered_names(spark)[1])
            announce(f"{'reloaded' if ok else 'reload failed'}: {manifest}", flush=True)
    logger.info("Stopping: cancelling running queries")
    query_log.stopped.set()
    spark.sparkContext.cancelAllJobs()
    server.stop()
    spark.stop()
    return 0


def _reload(spark, publisher: Publisher, manifest, previous_views: list[str]) -> bool:
    from sql_dl.registration import bootstrap

    try:
        loaded = bootstrap(spark, manifest)
    except Exception as e:  # a bad manifest must never stop a running server
        logger.error("Reload failed; the previous definitions stay:\n%s", e)
        return False
    publisher.publish(loaded, previous_views)
    logger.info("Reloaded %s: new connections see the new functions; views changed for all",
                manifest)
    return True


def _wait_until_listening(host: str, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise ServerError(f"the Thrift Server did not accept connections on {host}:{port} within "
                      f"{READY_TIMEOUT:.0f} s; see the Spark log above")
