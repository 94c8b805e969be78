"""Every reach past PySpark's public API, exercised on the installed Spark, and what a user
reads when one does not work on another version."""

from __future__ import annotations

import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import pyspark
from sql_dl.spark import internals as spark_internals
from sql_dl.errors import SparkInternalsError

from helpers.processes import free_port, jdbc_functions


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check_hive_server_properties(spark, tmp_path):
    """The settings a HiveServer2 authentication provider reads from a new HiveConf."""
    key = "hive.server2.authentication.ldap.url"
    system = spark.sparkContext._jvm.java.lang.System
    spark_internals.set_hive_server_properties(spark, {key: "ldap://probe.invalid:389"})
    try:
        conf = spark.sparkContext._jvm.org.apache.hadoop.hive.conf.HiveConf()
        assert conf.get(key) == "ldap://probe.invalid:389"
    finally:
        system.clearProperty(key)


def check_temp_dir(spark, tmp_path):
    assert spark_internals.spark_temp_dir(spark).is_dir()


def check_python_exec(spark, tmp_path):
    spark_internals.set_python_exec(spark, sys.executable)
    assert spark.sparkContext.pythonExec == sys.executable


def check_copy_and_delete(spark, tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"model bytes")
    target = tmp_path / "copy.bin"
    spark_internals.copy_to_local(spark, source.as_uri(), target)
    assert target.read_bytes() == b"model bytes"
    spark_internals.delete_path(spark, source.as_uri())
    assert not source.exists()


def check_hive_result_lines(spark, tmp_path):
    frame = spark.sql("SELECT 1 AS n, 'a' AS s, array(1, 2) AS xs, CAST(NULL AS STRING) AS z")
    assert spark_internals.hive_result_lines(frame) == ["1\ta\t[1,2]\tNULL"]


def check_injected_functions(spark, tmp_path):
    from pyspark.errors import AnalysisException

    spark.udf.register("sql_dl_probe", lambda x: x + 1, "int")
    injected = spark_internals.injected_functions(spark)
    before = injected.size()
    spark_internals.inject_session_function(spark, "sql_dl_probe")
    try:
        assert injected.size() == before + 1
        assert spark.newSession().sql("SELECT sql_dl_probe(41) AS n").first().n == 42
    finally:
        injected.remove(injected.size() - 1)
        spark.sql("DROP TEMPORARY FUNCTION sql_dl_probe")
    with pytest.raises(AnalysisException, match="UNRESOLVED_ROUTINE"):
        spark.newSession().sql("SELECT sql_dl_probe(41)").collect()


def check_thrift_server(spark, tmp_path):
    """Starts and stops the server in this session, and lists functions through it; statements
    sent to it over JDBC, and their records, are checked end to end by tests/test_server.py
    (sql-dl serve)."""
    port = free_port()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()  # where sql-dl serve puts them
    hadoop.set("hive.server2.thrift.bind.host", "127.0.0.1")
    hadoop.set("hive.server2.thrift.port", str(port))
    spark.sql("CREATE DATABASE IF NOT EXISTS sql_dl_probe_db")
    injected = spark_internals.injected_functions(spark)
    spark.udf.register("sql_dl_probe", lambda n: n, "long")
    spark_internals.inject_session_function(spark, "sql_dl_probe")
    # from a new thread: Hive keeps the configuration of this thread's earlier queries
    with ThreadPoolExecutor(1) as thread:
        server = thread.submit(spark_internals.start_thrift_server, spark).result()
    try:
        spark_internals.install_operation_manager(spark, server, audit=True)
        wait_for_port(port)
        # JDBC patterns: % any run (empty too), _ one character, case ignored; each once
        assert [row[:2] for row in jdbc_functions(port, "SQL_DL_PROB%")] == [
            ("default", "sql_dl_probe")]
        assert [row[1] for row in jdbc_functions(port, "ab_")] == ["abs"]
        assert [row[1] for row in jdbc_functions(port, "sql_dl_probe", "sql_dl_probe_db")] == [
            "sql_dl_probe"]
        from pyhive import hive

        cursor = hive.connect(host="127.0.0.1", port=port, username="probe").cursor()
        cursor.execute("SELECT id FROM range(3)")
        assert len(cursor.fetchall()) == 3
        cursor.close()
        closed = spark_internals.closed_statements(spark)[-2:]  # after jdbc_functions' USEs
        assert [(c.user, c.client, c.statement, c.rows, c.outcome, c.error) for c in closed] == [
            ("probe", "127.0.0.1", "USE `default`", 0, "FINISHED", None),  # PyHive's
            ("probe", "127.0.0.1", "SELECT id FROM range(3)", 3, "FINISHED", None)]
        assert spark_internals.closed_statements(spark, and_open=True) == []  # each once
        executions = spark_internals.thrift_server_executions(spark)
        assert any("functionName : ab_" in e.statement for e in executions)
        assert all(isinstance(e, spark_internals.Execution) for e in executions)
        assert closed[1].id in {e.id for e in executions if e.finished}
    finally:
        injected.remove(injected.size() - 1)
        spark.sql("DROP TEMPORARY FUNCTION sql_dl_probe")
        spark.sql("DROP DATABASE sql_dl_probe_db")
        server.stop()
        hadoop.unset("hive.server2.thrift.port")
        hadoop.unset("hive.server2.thrift.bind.host")


def check_launch_gateway(spark, tmp_path):
    """A second driver JVM, without a SparkContext: its stderr lands in the file given; its
    log is silenced, loggers with levels of their own included."""
    from pyspark import SparkConf

    log = tmp_path / "jvm.log"
    with open(log, "wb") as stderr:
        gateway = spark_internals.launch_gateway(SparkConf(loadDefaults=False), stderr)
    try:
        gateway.jvm.System.err.println("to the log file")
        gateway.jvm.System.err.flush()
        assert gateway.jvm.System.getProperty("java.version")
        log4j = gateway.jvm.org.apache.logging.log4j
        named = "org.apache.spark.sql.hive.thriftserver.SparkExecuteStatementOperation"
        log4j.core.config.Configurator.setLevel("org.apache.spark.sql.hive", log4j.Level.ERROR)
        spark_internals.silence_jvm_log(gateway.jvm)
        assert not log4j.LogManager.getLogger(named).isErrorEnabled()
        assert not log4j.LogManager.getRootLogger().isErrorEnabled()
    finally:
        gateway.shutdown()
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=60)
    assert "to the log file" in log.read_text()


def check_describe_function(spark, tmp_path):
    from pyspark.errors import AnalysisException

    from sql_dl.driver.function_docs import FunctionDoc

    spark.udf.register("sql_dl_described", lambda x: x, "long")
    doc = FunctionDoc("sql_dl.tests.probe", "sql_dl_described(x) - Gives x back.",
                      ("x - BIGINT",), ("SELECT sql_dl_described(1);",), "x:int::")
    spark_internals.describe_function(spark, "sql_dl_described", doc)
    lines = [r[0] for r in spark.sql("DESCRIBE FUNCTION EXTENDED sql_dl_described").collect()]
    assert lines[:3] == ["Function: sql_dl_described", "Class: sql_dl.tests.probe",
                         "Usage: sql_dl_described(x) - Gives x back."]
    assert "      * x - BIGINT" in "\n".join(lines)
    assert spark.sql("SELECT sql_dl_described(41) AS v").first().v == 41  # still callable
    with pytest.raises(AnalysisException, match=re.escape(  # and its arguments are checked
            "sql_dl_described(x): x must be an INT. Received: x STRING 'a'")):
        spark.sql("SELECT sql_dl_described('a')")


def check_skipped_file_count(spark, tmp_path):
    """sql_dl's SkippedFiles counts a file an image view listed and could not read."""
    import shutil

    import sql_dl
    from helpers.data import photo_files

    files = photo_files(tmp_path / "images")
    sql_dl.bootstrap(spark, {"images": {"probe": {"path": str(tmp_path / "images")}}})
    frame = spark.sql("SELECT path, image FROM probe")
    frame.explain()
    shutil.rmtree(tmp_path / "images" / "things")
    before = spark_internals.skipped_file_count(spark)
    assert len([r for r in frame.collect() if r.image is not None]) == 3
    assert spark_internals.skipped_file_count(spark) - before == len(files) - 3


def check_finish_progress_bar(spark, tmp_path):
    """Its calls exist (tests/test_cli.py's prompt test sees the bar erased on a terminal)."""
    context = spark.sparkContext._jsc.sc()
    context.listenerBus().waitUntilEmpty(1000)
    bar = context.progressBar()
    assert bar.isEmpty() or bar.get().getClass().getSimpleName() == "ConsoleProgressBar"
    assert spark_internals.finish_progress_bar(spark) is None


def check_inject_table_functions(spark, tmp_path):
    """A session created after the injection has the index's table function; one created
    after injecting none again does not."""
    from pyspark.errors import AnalysisException

    import sql_dl
    from helpers.data import photo_files, tiny_cnn

    photo_files(tmp_path / "images")
    tiny_cnn().save(tmp_path / "cnn.keras")
    sql_dl.bootstrap(spark, {
        "models": {"cnn": {"path": str(tmp_path / "cnn.keras")}},
        "images": {"probe": {"path": str(tmp_path / "images")}},
        "indexes": {"probe_like": {"view": "probe", "function": "cnn_features"}}})
    query = "SELECT count(*) AS n FROM probe_like(array_repeat(1.0F, 8), 2)"
    spark_internals.inject_table_functions(spark, ["probe_like"])
    assert spark.newSession().sql(query).first().n == 2
    spark_internals.inject_table_functions(spark, [])
    with pytest.raises(AnalysisException, match="UNRESOLVABLE_TABLE_VALUED_FUNCTION"):
        spark.newSession().sql(query)


CHECKS = {
    "finish_progress_bar": check_finish_progress_bar,
    "spark_temp_dir": check_temp_dir,
    "set_python_exec": check_python_exec,
    "copy_to_local": check_copy_and_delete,
    "delete_path": check_copy_and_delete,
    "hive_result_lines": check_hive_result_lines,
    "describe_function": check_describe_function,
    "launch_gateway": check_launch_gateway,
    "silence_jvm_log": check_launch_gateway,
    "injected_functions": check_injected_functions,
    "inject_session_function": check_injected_functions,
    "inject_table_functions": check_inject_table_functions,
    "start_thrift_server": check_thrift_server,
    "install_operation_manager": check_thrift_server,
    "closed_statements": check_thrift_server,
    "thrift_server_executions": check_thrift_server,
    "set_hive_server_properties": check_hive_server_properties,
    "skipped_file_count": check_skipped_file_count,
}


def test_every_fenced_function_has_a_check():
    assert sorted(spark_internals.FENCED) == sorted(CHECKS)


@pytest.mark.parametrize("check", sorted(set(CHECKS.values()), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_fenced_functions_work_on_the_installed_spark(spark, tmp_path, check):
    check(spark, tmp_path)


class _OtherSpark:
    """A session of a Spark whose private fields are not where sql_dl looks for them."""

    class sparkContext:  # noqa: N801 - mirrors the attribute it stands in for
        pass


@pytest.mark.parametrize("function, args, feature, still_works", [
    (spark_internals.injected_functions, (), "list the functions injected into new Spark sessions",
     "sql-dl serve cannot publish the manifest's functions; sql-dl sql and bootstrap work."),
    (spark_internals.thrift_server_executions, (), "read the Thrift Server's records of statements",
     "The server serves; only its query log"),
    (spark_internals.spark_temp_dir, (), "find the temporary directory of the SparkContext",
     "Nothing of sql_dl works in this session without it."),
])
def test_a_different_spark_gets_an_error_naming_feature_version_and_what_works(
        function, args, feature, still_works):
    with pytest.raises(SparkInternalsError) as raised:
        function(_OtherSpark(), *args)
    message = str(raised.value)
    assert message.startswith(f"sql_dl cannot {feature} on this Spark version: AttributeError")
    assert still_works in message
    assert message.endswith(f"Received: pyspark=={pyspark.__version__}")
    assert isinstance(raised.value, RuntimeError)
