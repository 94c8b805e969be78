"""Every use of Spark or PySpark beyond their public Python API, fenced in one place.

Each function names the class or field it relies on and the Spark version it was checked
on. When one fails on another Spark version it raises `SparkInternalsError`, which names
the feature, the Spark version and what still works, instead of a bare Py4J error.
Errors raised by the JVM code itself (a missing file, a failed query) pass through.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

from sql_dl.errors import SparkInternalsError
from sql_dl.spark.extension import extension_active

__all__ = ["FENCED", "ClosedStatement", "Execution", "RefusedLogin", "StartedStatement",
           "closed_statements", "copy_to_local", "delete_path", "describe_function",
           "driver_process", "finish_progress_bar", "hive_result_lines", "inject_session_function",
           "inject_table_functions",
           "injected_functions", "install_login_audit", "install_operation_manager",
           "launch_gateway", "next_started_statement", "refused_logins",
           "set_hive_server_properties", "set_python_exec", "silence_jvm_log",
           "skipped_file_count", "spark_temp_dir", "start_thrift_server",
           "started_statement_written", "thrift_server_executions"]

CHECKED_ON = "4.3.0"
FENCED: list[str] = []  # the fenced functions' names, for the test that calls each of them

_T = TypeVar("_T")


def _fenced(feature: str, still_works: str) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Turns a failed reach past the public API into a `SparkInternalsError`."""

    def decorate(function: Callable[..., _T]) -> Callable[..., _T]:
        FENCED.append(function.__name__)

        @functools.wraps(function)
        def fenced(*args: Any, **kwargs: Any) -> _T:
            from py4j.protocol import Py4JError, Py4JJavaError

            try:
                return function(*args, **kwargs)
            except Py4JJavaError:  # the JVM code ran and failed: not a version problem
                raise
            except (AttributeError, TypeError, Py4JError) as e:
                import pyspark

                raise SparkInternalsError(
                    f"sql_dl cannot {feature} on this Spark version: {type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}. {still_works} "
                    f"Use PySpark {CHECKED_ON}, the version this was checked on, to get it "
                    f"back. Received: pyspark=={pyspark.__version__}") from e

        return fenced

    return decorate


def driver_process(spark):
    """The driver JVM's process (a ``subprocess.Popen``) when PySpark started it, else None.
    Relies on PySpark's ``SparkContext._gateway.proc`` (checked on 4.3.0)."""
    return getattr(getattr(spark.sparkContext, "_gateway", None), "proc", None)


@_fenced("send the driver JVM's output to a log file",
         "Spark's log and the workers' output go to the terminal instead.")
def launch_gateway(conf, stderr):
    """Starts the driver JVM (``spark-submit`` with ``conf``) with its stderr on ``stderr``,
    a file object or ``subprocess.PIPE``; returns the Py4J gateway, its process in ``.proc``.

    Relies on ``pyspark.java_gateway.launch_gateway(conf, popen_kwargs)``, PySpark's developer
    hook for capturing the JVM's output (checked on 4.3.0).
    """
    from pyspark.java_gateway import launch_gateway as launch

    return launch(conf, popen_kwargs={"stderr": stderr})


@_fenced("silence the driver JVM's log",
         "Stopping still works; the cancelled queries' traces reach the log.")
def silence_jvm_log(jvm) -> None:
    """Sets every log4j logger of the JVM behind ``jvm`` (a Py4J view, ``sc._jvm``) to FATAL,
    those with a level of their own included (``SparkContext.setLogLevel`` sets the root's).

    Relies on log4j 2's ``Configurator.setAllLevels``, shipped with Spark (checked on 4.3.0).
    """
    log4j = jvm.org.apache.logging.log4j
    log4j.core.config.Configurator.setAllLevels(log4j.LogManager.ROOT_LOGGER_NAME,
                                                log4j.Level.FATAL)


@_fenced("find the temporary directory of the SparkContext",
         "Nothing of sql_dl works in this session without it.")
def spark_temp_dir(spark) -> Path:
    """The driver's temporary directory, removed when the JVM stops.

    Relies on ``SparkContext._temp_dir`` (PySpark, checked on 4.3.0).
    """
    return Path(spark.sparkContext._temp_dir)


@_fenced("set the Python interpreter of the Python workers",
         "Set PYSPARK_PYTHON to this interpreter before starting Spark instead.")
def set_python_exec(spark, python: str) -> None:
    """Makes the session's Python workers run ``python`` from now on.

    Relies on the ``SparkContext.pythonExec`` attribute, which PySpark reads when it
    starts a Python worker (checked on 4.3.0).
    """
    spark.sparkContext.pythonExec = python


@_fenced("read a Hadoop file system from the driver",
         "Local model, weights and labels files still work; copy the file to this machine.")
def copy_to_local(spark, uri: str, target: Path) -> None:
    """Copies ``uri`` from its Hadoop file system (HDFS, S3A, ...) to the local ``target``.

    Relies on ``SparkContext._jvm`` and ``_jsc.hadoopConfiguration()`` to reach
    ``org.apache.hadoop.fs.FileSystem`` (checked on 4.3.0).
    """
    context = spark.sparkContext
    source = context._jvm.org.apache.hadoop.fs.Path(uri)
    filesystem = source.getFileSystem(context._jsc.hadoopConfiguration())
    filesystem.copyToLocalFile(False, source, context._jvm.org.apache.hadoop.fs.Path(
        target.as_uri()), True)


@_fenced("delete a path on a Hadoop file system",
         "Training still works with a local stagingDir; delete remote staging folders by hand.")
def delete_path(spark, uri: str) -> None:
    """Deletes ``uri`` (recursively) on its Hadoop file system.

    Relies on ``SparkContext._jvm`` and ``_jsc.hadoopConfiguration()`` (checked on 4.3.0).
    """
    context = spark.sparkContext
    path = context._jvm.org.apache.hadoop.fs.Path(uri)
    path.getFileSystem(context._jsc.hadoopConfiguration()).delete(path, True)


@_fenced("format results as spark-sql does",
         "Queries still run; DataFrame.show() and collect() format them another way.")
def hive_result_lines(frame) -> list[str]:
    """A DataFrame's rows as the tab-separated lines ``spark-sql`` prints.

    Relies on ``org.apache.spark.sql.execution.HiveResult.hiveResultString`` and
    ``DataFrame._jdf`` (checked on 4.3.0).
    """
    jvm = frame.sparkSession.sparkContext._jvm
    plan = frame._jdf.queryExecution().executedPlan()
    lines = jvm.org.apache.spark.sql.execution.HiveResult.hiveResultString(plan)
    return list(jvm.scala.jdk.javaapi.CollectionConverters.asJava(lines))


@_fenced("clear Spark's progress bar before the prompt",
         "After a failed job the progress bar may erase the sql-dl> prompt; press Enter.")
def finish_progress_bar(spark, timeout_ms: int = 2000) -> None:
    """Lets Spark's console progress bar take in the end of the jobs that ran, and erase
    itself, now: else its next refresh erases the line printed after it (the prompt).

    Relies on ``SparkContext.listenerBus().waitUntilEmpty`` and ``progressBar()``
    (``ConsoleProgressBar.finishAll``), package-private in Scala (checked on 4.3.0).
    """
    context = spark.sparkContext._jsc.sc()
    bar = context.progressBar()
    if bar.isEmpty():
        return
    try:
        context.listenerBus().waitUntilEmpty(timeout_ms)
    except Exception:  # noqa: BLE001 - a busy bus: the bar is erased anyway
        pass
    bar.get().finishAll()


@_fenced("list the functions injected into new Spark sessions",
         "sql-dl serve cannot publish the manifest's functions; sql-dl sql and bootstrap work.")
def injected_functions(spark):
    """The root session's ``SparkSessionExtensions.injectedFunctions`` buffer (a Java object
    with ``clear()``), so that a reload can also take functions back.

    Spark offers no public way to remove an injected function; the buffer is a private
    field of ``org.apache.spark.sql.SparkSessionExtensions``, reached through Java
    reflection (checked on 4.3.0).
    """
    extensions = spark._jsparkSession.extensions()
    for field in extensions.getClass().getDeclaredFields():
        if field.getName().endswith("injectedFunctions"):
            field.setAccessible(True)
            return field.get(extensions)
    raise AttributeError("SparkSessionExtensions has no injectedFunctions field")


def _temporary_function(jvm, name: str):
    """The registry's identifier of temporary function ``name``: ``system.session.name``."""
    return jvm.org.apache.spark.sql.catalyst.FunctionIdentifier(
        name, jvm.scala.Some("session"), jvm.scala.Some("system"))


@_fenced("describe the manifest's functions (DESCRIBE FUNCTION, JDBC getFunctions)",
         "The functions work; DESCRIBE FUNCTION shows Spark's 'Usage: N/A' for them.")
def describe_function(spark, name: str, doc) -> None:
    """Gives the temporary function ``name`` the text of ``doc`` (a `FunctionDoc`), which
    ``DESCRIBE FUNCTION`` and the Thrift Server's ``GetFunctions`` read, and a builder that
    checks each call's arguments against ``doc.parameters`` as Spark analyses it
    (``sql_dl.spark.CheckedArguments``, when the extension's jar is loaded).

    Drops and registers again the function's builder in ``SessionState.functionRegistry()``
    under its ``system.session`` identifier with a new
    ``org.apache.spark.sql.catalyst.expressions.ExpressionInfo`` (checked on 4.3.0).
    """
    jvm = spark.sparkContext._jvm
    registry = spark._jsparkSession.sessionState().functionRegistry()
    qualified = _temporary_function(jvm, name)
    builder = registry.lookupFunctionBuilder(qualified).get()
    if extension_active(spark):
        builder = jvm.sql_dl.spark.CheckedArguments(name, doc.parameters, builder)
    arguments, examples = doc.extended()
    info = jvm.org.apache.spark.sql.catalyst.expressions.ExpressionInfo(
        doc.source, None, name, doc.usage, arguments, examples, "", "", "", "", "python_udf")
    registry.dropFunction(qualified)  # replacing it would log a warning for each function
    registry.registerFunction(qualified, info, builder)


@_fenced("inject a function into new Spark sessions",
         "sql-dl serve cannot publish the manifest's functions; sql-dl sql and bootstrap work.")
def inject_session_function(spark, name: str) -> None:
    """Makes every session created from now on apply the root session's temporary function
    ``name``, as the Thrift Server creates one session per connection.

    Relies on ``SessionState.functionRegistry()`` lookups by a ``FunctionIdentifier`` in the
    ``system.session`` namespace and on ``SparkSessionExtensions.injectFunction``
    (checked on 4.3.0).
    """
    jvm = spark.sparkContext._jvm
    session = spark._jsparkSession
    registry = session.sessionState().functionRegistry()
    qualified = _temporary_function(jvm, name)
    info = registry.lookupFunction(qualified).get()
    builder = registry.lookupFunctionBuilder(qualified).get()
    unqualified = jvm.org.apache.spark.sql.catalyst.FunctionIdentifier(
        name, jvm.scala.Option.empty(), jvm.scala.Option.empty())
    session.extensions().injectFunction(jvm.scala.Tuple3(unqualified, info, builder))


@_fenced("inject the indexes' table functions into new Spark sessions",
         "sql-dl serve's connections cannot search the manifest's indexes; sql-dl sql and "
         "bootstrap can.")
def inject_table_functions(spark, names) -> None:
    """Makes every session created from now on have the root session's table functions
    ``names`` (the indexes'), in place of those injected before (``IndexFunction.inject``:
    ``SparkSessionExtensions.injectTableFunction`` and its private buffer, checked on
    4.3.0)."""
    spark.sparkContext._jvm.sql_dl.spark.similarity.IndexFunction.inject(
        spark._jsparkSession, json.dumps(sorted(names)))


@_fenced("start the Spark Thrift Server in this session",
         "sql-dl sql and bootstrap work; only sql-dl serve needs the Thrift Server.")
def start_thrift_server(spark):
    """Starts HiveServer2 on the session (a Java object with ``stop()``).

    Relies on ``org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    .startWithSparkSession(session, exitOnError)``, shipped in the pyspark wheel, and
    ``SparkSession._jsparkSession`` (checked on 4.3.0). ``exitOnError`` is off: with it, an
    error in the server's threads (one can come as it stops) ends the whole JVM at once.
    """
    thriftserver = spark.sparkContext._jvm.org.apache.spark.sql.hive.thriftserver
    return thriftserver.HiveThriftServer2.startWithSparkSession(spark._jsparkSession, False)


@_fenced("give the Thrift Server's authentication its --hiveconf settings",
         "The server serves; LDAP and CUSTOM authentication cannot read their settings.")
def set_hive_server_properties(spark, hive_conf: Mapping[str, str]) -> None:
    """Makes ``hive_conf`` JVM system properties of the driver, as HiveServer2's own
    ``--hiveconf`` does (``HiveServer2.ServerOptionsProcessor``).

    The server's authentication providers (``LdapAuthenticationProviderImpl``,
    ``CustomAuthenticationProviderImpl``) read a ``new HiveConf()``, which sees system
    properties and hive-site.xml but not the session's ``spark.hadoop.*`` settings. Relies on
    ``SparkContext._jvm`` (checked on 4.3.0).
    """
    system = spark.sparkContext._jvm.java.lang.System
    for key, value in hive_conf.items():
        system.setProperty(key, value)


@_fenced("replace the Thrift Server's operations (JDBC getFunctions, the audit trail)",
         "The server serves; getFunctions lists functions as Spark does (temporary and built-in "
         "ones once per database, and % in the name pattern only where Spark reads it), and "
         "there is no audit trail.")
def install_operation_manager(spark, server, audit: bool) -> None:
    """Makes ``server``, started and without sessions, answer JDBC ``getFunctions`` with
    sql_dl's ``ListFunctionsOnce`` and, with ``audit``, run statements as sql_dl's
    ``AuditedStatement`` (both in sql_dl's jar, which must be on the classpath).

    Relies on the private fields ``SessionManager.operationManager`` and
    ``SparkSQLSessionManager.sparkSqlOperationManager``, on ``SparkGetFunctionsOperation`` and
    on ``SparkExecuteStatementOperation`` (checked on 4.3.0; see
    jvm/src/sql_dl/spark/thrift/SqlDlOperationManager.java).
    """
    spark.sparkContext._jvm.sql_dl.spark.thrift.SqlDlOperationManager.install(server, audit)


class ClosedStatement(NamedTuple):
    """A statement the Thrift Server ran and its client closed, as the audit trail needs it."""

    id: str
    user: str
    client: str
    statement: str
    created: int  # epoch milliseconds
    rows: int  # rows the client fetched
    outcome: str  # Hive's OperationState: FINISHED, ERROR, CANCELED, TIMEDOUT, ...
    error: str | None


class RefusedLogin(NamedTuple):
    """A login the server refused (sql_dl's ``AuditedLogin``)."""

    user: str  # as the client typed it
    client: str | None
    at: int  # epoch milliseconds
    why: str


def install_login_audit(spark, server) -> None:
    """Makes logins through ``server``'s binary transport know the client's address, for
    sql_dl's ``AuditedLogin`` (reflection on ``ThriftBinaryCLIService.server`` and
    ``TServer.inputTransportFactory_``, checked on 4.3.0)."""
    spark.sparkContext._jvm.sql_dl.spark.thrift.AuditedLogin.install(server)


def refused_logins(spark) -> list[RefusedLogin]:
    """The logins sql_dl's ``AuditedLogin`` refused since the last call."""
    return [RefusedLogin(r.user(), r.client(), r.at(), r.why())
            for r in spark.sparkContext._jvm.sql_dl.spark.thrift.AuditedLogin.drain()]


class StartedStatement(NamedTuple):
    """A statement the Thrift Server is about to run, as the audit trail needs it."""

    id: str
    user: str
    client: str
    statement: str
    at: int  # epoch milliseconds


def next_started_statement(spark, timeout: float) -> StartedStatement | None:
    """The next statement about to run (``install_operation_manager`` with ``audit``),
    waiting up to ``timeout`` seconds; it runs once `started_statement_written` is called
    (or after two seconds). Through the SparkContext's Py4J gateway (``_jvm``)."""
    started = spark.sparkContext._jvm.sql_dl.spark.thrift.AuditedStatement.nextStarted(
        int(timeout * 1000))
    if started is None:
        return None
    return StartedStatement(started.statementId(), started.user(), started.client(),
                            started.statement(), started.at())


def started_statement_written(spark, statement_id: str) -> None:
    """Lets the statement ``statement_id`` run: its audit line is written."""
    spark.sparkContext._jvm.sql_dl.spark.thrift.AuditedStatement.written(statement_id)


@_fenced("read the statements the Thrift Server closed",
         "The server serves; only its audit trail is off.")
def closed_statements(spark, and_open: bool = False) -> list[ClosedStatement]:
    """The statements closed since the last call (``install_operation_manager`` with
    ``audit``), each once; with ``and_open`` (as the server stops), then those still open, as
    they are now. Read through the SparkContext's Py4J gateway (``_jvm``)."""
    return [ClosedStatement(r.statementId(), r.user(), r.client(), r.statement(), r.created(),
                            r.rows(), r.outcome(), r.error())
            for r in spark.sparkContext._jvm.sql_dl.spark.thrift.AuditedStatement.drain(and_open)]


@_fenced("count the image files queries skipped because they were deleted",
         "Queries still skip such files, and the driver's log names them.")
def skipped_file_count(spark) -> int:
    """The running total of sql_dl's ``SkippedFiles`` (in sql_dl's jar, which must be on
    the classpath), reached through the SparkContext's Py4J gateway (``_jvm``)."""
    return int(spark.sparkContext._jvm.sql_dl.spark.SkippedFiles.total())


class Execution(NamedTuple):
    """One statement the Thrift Server ran or is running."""

    id: str
    user: str
    statement: str
    started: int  # epoch milliseconds
    finished_at: int  # epoch milliseconds, 0 while it runs
    error: str  # the error message of a statement that failed, else ""

    @property
    def finished(self) -> bool:
        return self.finished_at > 0


@_fenced("read the Thrift Server's records of statements",
         "The server serves; only its query log (user names, per-query bad-image counts) is off.")
def thrift_server_executions(spark) -> list[Execution]:
    """The statements the Thrift Server ran or is running, as its UI page lists them.

    Relies on ``HiveThriftServer2AppStatusStore`` over the SparkContext's status store
    (``_jsc.sc().statusStore().store()``) and its ``ExecutionInfo`` records
    (checked on 4.3.0).
    """
    jvm = spark.sparkContext._jvm
    store = jvm.org.apache.spark.sql.hive.thriftserver.ui.HiveThriftServer2AppStatusStore(
        spark.sparkContext._jsc.sc().statusStore().store())
    records = jvm.scala.jdk.javaapi.CollectionConverters.asJava(store.getExecutionList())
    return [Execution(r.execId(), r.userName(), r.statement(), r.startTimestamp(),
                      r.finishTimestamp(), r.detail() or "") for r in records]
