"""``sql-dl serve``: the manifest's functions and views over JDBC/ODBC (Spark Thrift Server).

Every connection gets its own Spark session, as the Thrift Server normally does. So that
each sees the manifest without running anything first:

- functions: the Python UDFs registered in the root session are injected into the root
  session's ``SparkSessionExtensions``, which every session created later applies;
- views: image views and ``sql_dl_models`` become persistent views in the metastore (see
  `sql_dl.cli.catalog.SharedCatalog`); so do ``sql_dl_cache`` and ``sql_dl_devices``, whose
  rows the server refreshes after statements (a persistent view cannot call the Python
  function that reads the executors).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sql_dl.cli.access import LOCKED_CONF, access_problems, install_path_policy, install_policy
from sql_dl.cli.audit import SECRET_KEY, AuditLog, Redactor, StartLines
from sql_dl.cli.catalog import ExecutorViewRefresh, SharedCatalog
from sql_dl.cli.query_log import QueryLog
from sql_dl.driver.keep_warm import KeepWarm, keep_warm, warm_up_in_background
from sql_dl.driver.registration import bootstrap
from sql_dl.driver.session import session
from sql_dl.errors import ConfigurationError, SparkInternalsError, SqlDlError
from sql_dl.manifest import load_manifest
from sql_dl.paths import JAR, home_dir
from sql_dl.spark import internals as spark_internals
from sql_dl.spark.extension import extension_active

__all__ = ["ServerError", "check_authentication", "check_bind_address", "serve"]

logger = logging.getLogger(__name__)

READY_TIMEOUT = 120.0
# Spark settings of sql-dl serve that an operator may change with --conf: every user's
# statements in a scheduler pool of their own (sql_dl's operation manager names it), shared
# fairly; a task that failed twice (an executor that ran out of memory under it, twice)
# fails its statement, rather than stalling the others four times; the UI off (it shows
# every user's statements).
SERVER_DEFAULTS = {"spark.scheduler.mode": "FAIR", "spark.task.maxFailures": "2",
                   "spark.ui.enabled": "false"}
JVM_ENDED = 3  # sql-dl serve's exit code when its driver JVM died under it
AUDITED_LOGIN = "sql_dl.spark.thrift.AuditedLogin"  # LDAP, with refusals recorded, throttled
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


def server_conf(host: str, port: int, hive_conf: Mapping[str, str],
                home: Path | None = None) -> dict[str, str]:
    """Spark settings that carry the HiveServer2 settings to the Thrift Server, keep Hive's
    operation logs under ``home``, and bind the driver's RPC endpoint, block manager (and
    UI, through ``SPARK_LOCAL_IP``) to ``host``."""
    settings = {}
    address = socket.gethostbyname(host)
    settings["spark.driver.bindAddress"] = address
    if not ipaddress.ip_address(address).is_unspecified:  # 0.0.0.0: Spark picks the host
        settings["spark.driver.host"] = address
    if home is not None:
        settings["spark.hadoop.hive.server2.logging.operation.log.location"] = str(
            home / "operation_logs")
    settings.update({f"spark.hadoop.{k}": v for k, v in hive_conf.items()})
    settings.update({
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.thrift.http.port": str(port),
        "spark.sql.hive.thriftServer.singleSession": "false",
    })
    return settings


def serve(manifest: str | os.PathLike, host: str = "127.0.0.1", port: int = 10000,
          master: str | None = None, conf: Mapping[str, str] | None = None,
          hive_conf: Mapping[str, str] | None = None, insecure: bool = False,
          home: str | None = None, announce=print, audit_log: str | os.PathLike | None = None,
          audit_max_bytes: int = 100 * 1024 ** 2, audit_backups: int = 10) -> int:
    """Runs the Thrift Server until SIGTERM or SIGINT; SIGHUP re-reads the manifest.

    ``announce`` gets one line when the server accepts connections (``ready: <JDBC URL>``)
    and one after each reload (``reloaded: <manifest>`` or ``reload failed: <manifest>``).
    With ``audit_log``, each statement gets a JSON line there (see `sql_dl.cli.audit`).

    Every logged-in user is held by the manifest's access policy (`sql_dl.cli.access`).
    Without ``master``, the executors run in a JVM of their own (`_executors_apart`).

    Returns:
        The exit code: 0 after a clean stop, `JVM_ENDED` when the driver JVM died.
    """
    hive_conf = dict(hive_conf or {})
    check_authentication(hive_conf)
    check_bind_address(host, hive_conf, insecure)
    login_audit = hive_conf.get("hive.server2.authentication", "NONE").upper() == "LDAP"
    served = dict(hive_conf)  # what HiveServer2 gets: LDAP through sql_dl's AuditedLogin
    if login_audit:
        served.update({"hive.server2.authentication": "CUSTOM",
                       "hive.server2.custom.authentication.class": AUDITED_LOGIN})
    reload = threading.Event()  # SIGHUP: from now on, lest one sent during the start end it
    signal.signal(signal.SIGHUP, lambda *_: reload.set())
    loaded = load_manifest(manifest)
    problems = access_problems(loaded, hive_conf)
    if problems:
        raise ServerError("\n".join(problems))
    home_path = _private_home(home)
    served.setdefault("hive.exec.local.scratchdir", str(home_path / "scratch"))
    audit = _open_audit_log(audit_log, audit_max_bytes, audit_backups) if audit_log else None
    os.environ["SPARK_LOCAL_IP"] = socket.gethostbyname(host)  # where the Spark UI listens
    settings = {**server_conf(host, port, served, home_path), **SERVER_DEFAULTS,
                **LOCKED_CONF, **(conf or {})}
    settings["spark.driver.extraClassPath"] = os.pathsep.join(  # for Hive's CUSTOM login
        filter(None, [settings.get("spark.driver.extraClassPath"), str(JAR)]))
    if master is None and "spark.master" not in settings and "MASTER" not in os.environ:
        master = _executors_apart(settings, home_path)
    spark = session(master=master, conf=settings, home=home_path)
    running = _start(spark, loaded, hive_conf, served, audit, login_audit)
    _wait_until_listening(host, port)
    announce(f"ready: {jdbc_url(host, port, hive_conf)}", flush=True)
    if not _serve_until_stopped(running, manifest, hive_conf, announce, reload):
        return JVM_ENDED
    _stop(running)
    return 0


def _executors_apart(settings: dict[str, str], home: Path) -> str:
    """The master that runs the executors in a JVM of their own, which a query that
    exhausts its memory ends without ending the server: Spark's standalone mode, its master
    and worker inside the driver JVM (``local-cluster[1,<cores>,<MB>]``), one executor with
    every core and `_executor_megabytes` of heap (``spark.executor.memory`` if set).

    The worker keeps its executors' folders (logs, fetched files) under ``SPARK_HOME/work``:
    ``SPARK_HOME`` becomes ``--home``/spark, links to pyspark's files and a ``work`` folder
    of its own (the package's may be read-only, and is shared with every other user).
    """
    import pyspark

    megabytes = (_megabytes(settings["spark.executor.memory"])
                 if "spark.executor.memory" in settings else _executor_megabytes())
    settings["spark.executor.memory"] = f"{megabytes}m"
    package, spark_home = Path(pyspark.__file__).parent, home / "spark"
    (spark_home / "work").mkdir(parents=True, exist_ok=True)
    for entry in package.iterdir():
        link = spark_home / entry.name
        if entry.name != "work" and not link.exists():
            if link.is_symlink():  # to where an earlier pyspark was
                link.unlink()
            link.symlink_to(entry)
    os.environ["SPARK_HOME"] = str(spark_home)
    return f"local-cluster[1,{os.cpu_count() or 1},{megabytes}]"


def _executor_megabytes() -> int:
    """The executor's heap: a quarter of the machine's memory, between 1 and 8 GiB (the
    rest is for the driver JVM, the Python workers and their models, and the OS)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024 ** 2
    return max(1024, min(8192, total // 4))


def _megabytes(text: str) -> int:
    """Megabytes of a JVM memory setting: ``4g``, ``512m``, ``2048`` (MB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", text.lower())
    if match is None:
        raise ServerError(f"spark.executor.memory is a size such as 4g or 512m. "
                          f"Received: {text!r}")
    number, unit = int(match.group(1)), match.group(2) or "m"
    return max(1, number * 1024 ** "kmgt".index(unit) // 1024)


def _private_home(home: str | os.PathLike | None) -> Path:
    """``--home`` (the metastore, the warehouse, Hive's operation logs and scratch folder,
    and, unless ``SQL_DL_CACHE`` says otherwise, the prediction cache), private to the
    server's account: everything the server and its JVM create from now on is too (umask
    077)."""
    os.umask(0o077)
    path = home_dir(home)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    (path / "scratch").mkdir(exist_ok=True)  # Hive's: it looks for files there as sessions open
    os.environ.setdefault("SQL_DL_CACHE", str(path / "cache"))
    return path


@dataclass
class _Running:
    """What a running server has started, to stop it again."""

    spark: object
    server: object  # HiveThriftServer2, a Java object
    catalog: SharedCatalog
    keeping: KeepWarm
    refresh: ExecutorViewRefresh
    query_log: QueryLog | None
    start_lines: StartLines | None


def _start(spark, manifest, hive_conf: Mapping[str, str], served: Mapping[str, str],
           audit: AuditLog | None, login_audit: bool) -> _Running:
    """Bootstraps and publishes the manifest, then starts the Thrift Server (with the
    HiveServer2 settings ``served``), keep-warm, the system views' refresh and the query
    log."""
    spark_internals.set_hive_server_properties(spark, served)
    try:
        redact = Redactor.for_settings(  # hive_conf is there too, as spark.hadoop.*
            dict(spark.sparkContext.getConf().getAll()),
            pattern=spark.conf.get("spark.sql.redaction.string.regex", None))
    except ConfigurationError as e:
        raise ServerError(str(e)) from e
    if not extension_active(spark):
        raise ServerError("sql-dl serve's access policy needs sql_dl's Spark extension "
                          "(sql_dl/jars/sql_dl-spark.jar), which was not built: install a JDK "
                          "(Debian: default-jdk-headless) and reinstall sql_dl")
    catalog = SharedCatalog(spark)
    install_path_policy(spark, manifest)
    # the metastore (embedded Derby: seconds to open, more to create) opens while the
    # manifest is bootstrapped
    with ThreadPoolExecutor(1, thread_name_prefix="sql_dl-metastore") as pool:
        opened = pool.submit(spark.catalog.databaseExists, "default")
        bootstrap(spark, manifest)
        opened.result()
    catalog.publish(manifest)
    # the models load in the Python workers from now on: a query that comes first waits
    # for them, where it would otherwise wait for the server
    warming = warm_up_in_background(spark)
    install_policy(spark, manifest, hive_conf)
    server = spark_internals.start_thrift_server(spark)
    _install_operations(spark, server, audit=audit is not None)
    if login_audit:
        spark_internals.install_login_audit(spark, server)
    keeping = keep_warm(spark)  # through idle minutes, and after previews (see keep_warm)
    refresh = ExecutorViewRefresh(catalog)
    refresh.start()
    warming.add_done_callback(lambda _: refresh.poke())  # sql_dl_devices: the loaded models
    try:
        query_log = QueryLog.start_if_possible(
            spark, redact, audit, on_finish=lambda: (keeping.poke(), refresh.poke()))
    except SparkInternalsError as e:
        raise ServerError(f"--audit-log needs Spark's records of statements: {e}") from e
    start_lines = StartLines(spark, audit, redact) if audit is not None else None
    if start_lines is not None:
        start_lines.start()
    return _Running(spark, server, catalog, keeping, refresh, query_log, start_lines)


def _serve_until_stopped(running: _Running, manifest, hive_conf: Mapping[str, str],
                         announce, reload: threading.Event) -> bool:
    """Waits for SIGTERM or SIGINT, reloading the manifest when ``reload`` is set (by SIGHUP,
    even one sent while the server started); returns False
    at once if the driver JVM ends (killed, or out of memory), so that ``sql-dl serve``
    exits non-zero and a supervisor (systemd, Kubernetes) restarts it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    jvm = spark_internals.driver_process(running.spark)
    while not stop.is_set():
        if jvm is not None and jvm.poll() is not None:
            logger.error("The Spark driver JVM ended (exit code %s); sql-dl serve stops with "
                         "exit code %d so that its supervisor restarts it", jvm.returncode,
                         JVM_ENDED)
            return False
        if reload.wait(0.5):
            reload.clear()
            ok = _reload(running.spark, running.catalog, manifest, hive_conf)
            announce(f"{'reloaded' if ok else 'reload failed'}: {manifest}", flush=True)
    return True


def _stop(running: _Running) -> None:
    """Cancels running queries, stops what `_start` started, then Spark."""
    logger.info("Stopping: cancelling running queries")
    running.refresh.stop()
    try:  # the cancelled queries' traces are expected
        spark_internals.silence_jvm_log(running.spark.sparkContext._jvm)
    except SparkInternalsError as e:
        logger.warning("%s", e)
    running.keeping.stop()
    running.spark.sparkContext.cancelAllJobs()
    running.server.stop()
    if running.start_lines is not None:
        running.start_lines.stop()
    if running.query_log is not None:
        running.query_log.stop()
    running.spark.stop()


def _open_audit_log(path, max_bytes: int, backups: int) -> AuditLog:
    try:
        return AuditLog(path, max_bytes, backups)
    except OSError as e:
        raise ServerError(f"cannot open the audit log: {e}. Received: --audit-log {path}") from e


def _install_operations(spark, server, audit: bool) -> None:
    """sql_dl's operations: statements whose user name is canonical and whose session keeps
    the settings analysts may not change, JDBC getFunctions with each function once and,
    with ``audit``, statements that keep what the audit log needs.

    Raises:
        ServerError: when they cannot be installed (the access policy needs them).
    """
    from py4j.protocol import Py4JJavaError

    try:
        spark_internals.install_operation_manager(spark, server, audit)
    except (SparkInternalsError, Py4JJavaError) as e:
        raise ServerError(f"cannot install sql_dl's Thrift Server operations, which the access "
                          f"policy needs: {e}") from e


def _reload(spark, catalog: SharedCatalog, manifest, hive_conf: Mapping[str, str]) -> bool:
    try:
        loaded = load_manifest(manifest)
        problems = access_problems(loaded, hive_conf)
        if problems:
            raise ServerError("\n".join(problems))
        install_path_policy(spark, loaded)
        loaded = bootstrap(spark, loaded)
    except Exception as e:  # a bad manifest must never stop a running server
        logger.error("Reload failed; the previous definitions stay:\n%s", e)
        return False
    catalog.publish(loaded)
    install_policy(spark, loaded, hive_conf)
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
