"""sql-dl serve's access policy: what an analyst may and may not do over JDBC, each refusal
checked for no side effect, grants, admins, and the manifest's access section.

The JDBC tests use the shared server of tests/conftest.py (as users start it, with
``SERVER_ACCESS``: ops administers, p32 and the view secret are bob's). Its users log in
without a password (no authentication on loopback); tests/test_ldap.py logs them in
through a directory, with group grants."""

from __future__ import annotations

import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers.processes import answer, beeline, listening_addresses, run_cli

from sql_dl.cli.access import SETTABLE, access_problems, policy_spec
from sql_dl.errors import ManifestError
from sql_dl.executor.path_policy import PathPolicy, Root, root_of
from sql_dl.manifest import AccessSpec, load_manifest
from sql_dl.paths import JAR


def connect(server, user: str, configuration: dict | None = None):
    from pyhive import hive

    return hive.connect(host="127.0.0.1", port=server.port, username=user,
                        configuration=configuration)


def rows(server, user: str, sql: str, configuration: dict | None = None) -> list[tuple]:
    """The rows of ``sql`` run by ``user`` in a connection of its own."""
    return answer(connect(server, user, configuration), sql)


def error_of(server, user: str, sql: str) -> str:
    """The one-line error the client gets for ``sql``, which must fail."""
    from pyhive.exc import OperationalError

    with pytest.raises(OperationalError) as raised:
        rows(server, user, sql)
    message = raised.value.args[0].status.errorMessage
    return message.removeprefix("Error running query: ")


def denied(server, sql: str, user: str = "alice") -> str:
    """The refusal of ``sql`` for ``user`` (an analyst): one line, ending with who ran it."""
    message = error_of(server, user, sql)
    assert message.startswith("AccessDenied: ") and "\n" not in message, message
    assert message.endswith(f". Received: user={user}"), message
    return message.removeprefix("AccessDenied: ").removesuffix(f". Received: user={user}")


def server_alive(server, photos) -> None:
    assert server.process.poll() is None
    assert rows(server, "bob", "SELECT count(*) FROM photos") == [(len(photos),)]


def test_programs_are_refused_and_nothing_runs(server, tmp_path, photos):
    marker = tmp_path / "ran"
    transform = "TRANSFORM runs programs on the server; only admins may"
    for sql in (f"SELECT TRANSFORM('x') USING 'touch {marker}' AS (o STRING)",
                f"SELECT * FROM photos WHERE EXISTS (SELECT TRANSFORM(path) USING "
                f"'touch {marker}' AS (o STRING))",
                f"BEGIN SELECT TRANSFORM('x') USING 'touch {marker}' AS (o STRING); END"):
        assert denied(server, sql) == transform
    java = "reflect, java_method and try_reflect call Java methods on the server; only admins may"
    for sql in ("SELECT reflect('java.lang.System', 'exit', 0)",
                "SELECT java_method('java.lang.System', 'exit', 0)",
                "SELECT try_reflect('java.lang.System', 'exit', 0)",
                "SELECT (SELECT reflect('java.lang.System', 'setProperty', "
                "'hive.server2.authentication.ldap.url', 'ldap://evil.invalid'))",
                "CREATE TEMPORARY VIEW v AS SELECT reflect('java.lang.System', 'getenv', 'HOME')",
                "SELECT path FROM photos ORDER BY reflect('java.util.UUID', 'randomUUID')"):
        assert denied(server, sql) == java
    assert not marker.exists()
    server_alive(server, photos)  # System.exit did not run


def test_xml_parsers_do_not_fetch_documents_from_other_hosts(server):
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    connected = []

    def accept():
        try:
            connected.append(listener.accept())
        except OSError:  # timed out, or closed: nobody came
            pass

    threading.Thread(target=accept, daemon=True).start()
    document = f'<!DOCTYPE a SYSTEM "http://127.0.0.1:{port}/x.dtd"><a>1</a>'
    for sql in (f"SELECT xpath_string('{document}', 'a')",
                f"SELECT xpath_int('{document}', 'a')",
                f"SELECT from_xml('{document}', 'a INT')",
                f"SELECT schema_of_xml('{document}')"):
        assert denied(server, sql) == (
            "xpath functions, from_xml and schema_of_xml fetch the external documents (DTDs) an "
            "XML text names, from any host; only admins may")
    time.sleep(1)
    listener.close()
    assert connected == []
    assert rows(server, "alice", "SELECT to_xml(named_struct('a', 1))") == [
        ("<ROW>\n    <a>1</a>\n</ROW>",)]  # writing XML reads nothing


def test_files_are_not_read_or_written_by_path(server, tmp_path, photos_dir, photos):
    # the same answer whether the file exists or not: no existence oracle, nothing listed
    passwd = denied(server, "SELECT * FROM text.`/etc/passwd`")
    assert passwd == ("text.`...` reads files by path (query the manifest's views); "
                      "only admins may")
    assert denied(server, f"SELECT * FROM text.`{tmp_path}/missing`") == passwd
    assert denied(server, f"SELECT * FROM binaryFile.`{photos_dir}`").startswith("binaryFile.`")
    assert denied(server, "CREATE TEMPORARY VIEW p USING text OPTIONS (path '/etc/passwd')") == (
        "CREATE VIEW ... USING reads files by path; only admins may")

    written = tmp_path / "written"
    for sql in (f"INSERT OVERWRITE DIRECTORY '{photos_dir}' USING text SELECT 'x'",
                f"INSERT OVERWRITE LOCAL DIRECTORY '{written}' SELECT 'x'"):
        assert denied(server, sql) == "INSERT OVERWRITE DIRECTORY writes files by path; only admins may"
    assert denied(server, f"CREATE TABLE planted (a STRING) USING text LOCATION "
                          f"'{photos_dir}/cat'") == (
        "CREATE TABLE changes the catalog or files every session shares (persistent DDL and "
        "DML); only admins may")
    assert sorted(p for p in photos_dir.rglob("*") if p.is_file()) == photos
    assert not written.exists()
    assert ("planted",) not in [r[1:2] for r in rows(server, "ops", "SHOW TABLES")]


def test_code_is_not_loaded(server, tmp_path):
    jar = tmp_path / "mine.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    for sql, does in ((f"ADD JAR '{jar}'", "ADD JAR loads code into the server"),
                      (f"ADD FILE '{jar}'", "ADD FILE loads files into the server"),
                      (f"ADD ARCHIVE '{jar}'", "ADD ARCHIVE loads files into the server"),
                      ("CREATE TEMPORARY FUNCTION up AS "
                       "'org.apache.hadoop.hive.ql.udf.generic.GenericUDFUpper'",
                       "CREATE FUNCTION loads code into the server"),
                      (f"CREATE FUNCTION up AS 'x.Y' USING JAR '{jar}'",
                       "CREATE FUNCTION loads code into the server"),
                      ("CREATE TEMPORARY FUNCTION sq(x INT) RETURNS INT RETURN x * x",
                       "CREATE FUNCTION loads code into the server"),
                      ("LIST JARS", "LIST JAR shows files of the server")):
        assert denied(server, sql) == f"{does}; only admins may"
    assert not any(str(jar) in row[0] or jar.name in row[0]
                   for row in rows(server, "ops", "LIST JARS"))
    assert rows(server, "ops", "SHOW USER FUNCTIONS LIKE 'up'") == []


def test_shared_state_cannot_be_changed(server, photos):
    catalog = "changes the catalog or files every session shares (persistent DDL and DML)"
    for sql, does in (("DROP VIEW photos", f"DROP TABLE or VIEW {catalog}"),
                      ("CREATE OR REPLACE VIEW default.photos AS SELECT 1 AS path",
                       "CREATE VIEW changes the catalog every session shares (analysts may "
                       "create temporary views)"),
                      ("ALTER VIEW photos AS SELECT 1 AS path", f"ALTER VIEW {catalog}"),
                      ("CREATE TABLE t (a INT)", f"CREATE TABLE {catalog}"),
                      ("CREATE DATABASE mine", f"CREATE DATABASE {catalog}"),
                      ("DROP DATABASE sql_dl_internal CASCADE", f"DROP DATABASE {catalog}"),
                      ("ANALYZE TABLE photos COMPUTE STATISTICS", f"ANALYZE TABLE {catalog}"),
                      ("CACHE TABLE photos", "CACHE TABLE changes the cache every session shares"),
                      ("UNCACHE TABLE photos",
                       "UNCACHE TABLE changes the cache every session shares"),
                      ("CLEAR CACHE", "CLEAR CACHE changes the cache every session shares"),
                      ("REFRESH TABLE photos",
                       "REFRESH TABLE changes the cache every session shares"),
                      ("CREATE GLOBAL TEMPORARY VIEW g AS SELECT 1",
                       "CREATE GLOBAL TEMPORARY VIEW makes a view every session shares")):
        assert denied(server, sql) == f"{does}; only admins may"
    server_alive(server, photos)  # photos unchanged for bob
    assert rows(server, "bob", "SHOW TABLES IN global_temp") == []
    assert "mine" not in [r[0] for r in rows(server, "ops", "SHOW DATABASES")]


@pytest.mark.parametrize("setting", [
    "spark.sql.thriftServer.queryTimeout=0",
    "spark.sql.legacy.setCommandRejectsSparkCoreConfs=false",
    "spark.redaction.regex=zzz",
    "spark.sql.redaction.string.regex=zzz",
    "spark.sql.optimizer.excludedRules=org.apache.spark.sql.catalyst.optimizer.PushDownPredicates",
    "spark.sql.extensions=x.Y",
    "spark.hadoop.hive.server2.authentication.ldap.url=ldap://evil.invalid",
    "hive.server2.authentication=NONE",
    "spark.sql.runSQLOnFiles=true",
    "spark.sql.variable.substitute=true",
    "spark.sql.thriftServer.queryTimeout",  # reading one, too
])
def test_settings_outside_the_allowlist_cannot_be_set_or_read(server, setting):
    key = setting.split("=")[0]
    message = denied(server, f"SET {setting}")
    verb = "changes" if "=" in setting else "reads"
    assert message == (f"SET {key} {verb} a setting of the server (analysts may set "
                       f"{', '.join(sorted(SETTABLE))}); only admins may")


def test_settings_stay_locked_within_the_session_and_as_it_opens(server):
    connection = connect(server, "alice")
    cursor = connection.cursor()
    with pytest.raises(Exception, match="AccessDenied: SET spark.sql.variable.substitute"):
        cursor.execute("SET spark.sql.variable.substitute=true")
    cursor.execute("SELECT '${spark.app.name}'")  # still not substituted: no value leaks
    assert cursor.fetchall() == [("${spark.app.name}",)]
    with pytest.raises(Exception, match="AccessDenied: SET lists every setting of the server"):
        cursor.execute("SET")
    cursor.execute("SET spark.sql.session.timeZone=UTC")  # on the allowlist
    cursor.execute("SELECT current_timezone()")
    assert cursor.fetchall() == [("UTC",)]
    connection.close()

    # settings a client sends as the session opens are put back for analysts, not admins
    opened = {"set:hiveconf:spark.sql.variable.substitute": "true"}
    query = "SELECT '${spark.sql.variable.substitute}'"
    assert rows(server, "alice", query, opened) == [("${spark.sql.variable.substitute}",)]
    assert rows(server, "ops", query, opened) == [("true",)]


def test_grants_limit_functions_and_views(server, photos):
    assert denied(server, "SELECT p32(image) FROM photos") == (
        "function p32 (of p32) is granted to bob only")
    assert denied(server, "SELECT count(*) FROM secret") == "view secret (of secret) is granted to bob only"
    assert denied(server, "CREATE TEMPORARY VIEW mine AS SELECT * FROM secret") == (
        "view secret (of secret) is granted to bob only")
    assert [len(r[0]) > 0 for r in rows(server, "bob", "SELECT p32(image) FROM photos LIMIT 2")] \
        == [True, True]
    assert rows(server, "bob", "SELECT count(*) FROM secret") == [(len(photos),)]
    # what the views read, and views not in the manifest, are for admins only
    files = [r[1] for r in rows(server, "ops", "SHOW TABLES IN sql_dl_internal")]
    assert files and denied(server, f"SELECT count(*) FROM sql_dl_internal.{files[0]}") == (
        f"spark_catalog.sql_dl_internal.{files[0]} is not one of the manifest's views; only "
        "admins may read it")
    rows(server, "ops", "CREATE OR REPLACE VIEW default.ops_view AS SELECT 1 AS one")
    assert denied(server, "SELECT * FROM ops_view") == (
        "view spark_catalog.default.ops_view is not one of the manifest's views; only admins may read it")
    assert rows(server, "ops", "SELECT * FROM ops_view") == [(1,)]
    rows(server, "ops", "DROP VIEW default.ops_view")


def test_system_views_show_analysts_only_what_is_granted_to_them(server):
    """sql_dl_models, sql_dl_views, sql_dl_cache and sql_dl_devices keep, for an analyst,
    the rows of the functions, models and views it may use (p32 and secret are bob's)."""
    def names(user: str, sql: str) -> list[str]:
        return sorted(r[0] for r in rows(server, user, sql))

    functions = "SELECT function FROM sql_dl_models"
    views = "SELECT view FROM sql_dl_views"
    assert names("bob", functions) == names("ops", functions)
    assert names("alice", functions) == [f for f in names("ops", functions) if f != "p32"]
    assert names("ops", views) == ["photos", "recent", "recent_hourly", "secret"]
    assert names("bob", views) == names("ops", views)
    assert names("alice", views) == ["photos", "recent", "recent_hourly"]
    # a filter, join or aggregate of a system view keeps to the same rows
    assert rows(server, "alice", "SELECT count(*) FROM sql_dl_views v JOIN sql_dl_models m "
                                 "ON m.function = 'p32' OR v.view = 'secret'") == [(0,)]
    rows(server, "bob", "SELECT count(*) FROM photos WHERE cnn(image) IS NOT NULL")  # loads cnn
    models = "SELECT DISTINCT model FROM sql_dl_devices"
    deadline = time.monotonic() + 30  # the executors' views are refreshed after statements,
    while (names("ops", models), names("alice", models)) != (["cnn"], ["cnn"]) and (  # and
           time.monotonic() < deadline):  # in the background: between two queries, too
        time.sleep(1)
    assert names("alice", models) == names("ops", models) == ["cnn"]
    cached = "SELECT DISTINCT model FROM sql_dl_cache"
    assert set(names("alice", cached)) <= {"cnn", "cnn_features", "cnn_top_k"}
    assert names("alice", cached) == names("ops", cached)


def test_indexes_over_jdbc_keep_to_the_grants_of_their_view_and_function(server):
    """An index's table function answers over JDBC as numpy does on the vectors the server
    gives; an analyst searches only the indexes whose view and function it may use."""
    import numpy as np

    from sql_dl.driver.vector_index import distances

    vectors = {path: np.asarray(json.loads(f), dtype=np.float32) for path, f in rows(
        server, "alice", "SELECT path, to_json(cnn_features(image)) FROM photos")}
    query = sorted(vectors)[3]
    found = rows(server, "alice", f"SELECT * FROM photos_like('{query}', 4)")
    assert query in [path for path, _, distance in found if distance < 1e-6]  # or its twin
    assert found[0][1] == found[0][0].split("/")[-2]  # the label
    exact = sorted(distances(vectors[query], np.stack(list(vectors.values())), "cosine"))[:4]
    np.testing.assert_allclose([r[2] for r in found], exact, atol=1e-5)
    assert denied(server, f"SELECT * FROM secret_like('{query}', 2)") == (
        "index secret_like reads view secret (of secret), granted to bob only")
    assert denied(server, "SELECT * FROM secret_like((SELECT image FROM secret LIMIT 1), 2)") \
        == "view secret (of secret) is granted to bob only"  # its query, judged first
    assert query in [path for path, _, distance in rows(
        server, "bob", f"SELECT * FROM secret_like('{query}', 2)") if distance < 1e-6]
    indexes = "SELECT index FROM sql_dl_indexes ORDER BY index"
    assert rows(server, "ops", indexes) == [("photos_like",), ("secret_like",)]
    assert rows(server, "alice", indexes) == [("photos_like",)]
    state = "SELECT state, images FROM sql_dl_indexes WHERE index = 'photos_like'"
    assert rows(server, "alice", state) == [("ready", len(vectors))]


def test_analysts_keep_what_bi_tools_need(server, photos, tmp_path):
    from TCLIService import ttypes

    connection = connect(server, " Alice ")  # names are canonical: trimmed, lower case
    cursor = connection.cursor()
    answers = {}
    for sql in ("SELECT current_user()", "SELECT count(*) FROM photos",
                "SELECT count(sql_dl_image_error(image)) FROM photos",
                "SELECT count(*) FROM sql_dl_models WHERE function = 'cnn'",
                "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "VALUES (1)",
                "SELECT count(*) FROM range(3)", "USE default",
                "CREATE TEMPORARY VIEW mine AS SELECT path FROM photos",
                "SELECT count(*) FROM mine", "DROP VIEW mine",
                "DECLARE VARIABLE n INT DEFAULT 0", "SET VAR n = (SELECT count(*) FROM photos)",
                "SELECT n", "SET -v", "SET spark.sql.ansi.enabled=false", "SELECT 1 / 0",
                "SHOW TABLES", "SHOW DATABASES", "DESCRIBE photos", "SHOW FUNCTIONS LIKE 'cnn*'",
                "DESCRIBE FUNCTION cnn", "SHOW CREATE TABLE photos", "EXPLAIN SELECT 1"):
        cursor.execute(sql)
        answers[sql] = cursor.fetchall() if cursor.description else []
    assert answers["SELECT current_user()"] == [("alice",)]
    assert answers["SELECT count(*) FROM photos"] == [(len(photos),)]
    assert answers["SELECT count(sql_dl_image_error(image)) FROM photos"] == [(0,)]
    assert answers["SELECT count(*) FROM sql_dl_models WHERE function = 'cnn'"] == [(1,)]
    assert answers["SELECT count(*) FROM mine"] == answers["SELECT n"] == [(len(photos),)]
    assert answers["SELECT 1 / 0"] == [(None,)]
    assert ("default", "photos", False) in answers["SHOW TABLES"]
    assert [r[0] for r in answers["SHOW FUNCTIONS LIKE 'cnn*'"]] == [
        "cnn", "cnn_features", "cnn_top_k"]

    # JDBC metadata calls (getSchemas, getTables, getColumns, getFunctions)
    client, session = connection.client, connection._sessionHandle
    calls = {"schemas": client.GetSchemas(ttypes.TGetSchemasReq(sessionHandle=session)),
             "tables": client.GetTables(ttypes.TGetTablesReq(sessionHandle=session,
                                                             schemaName="default")),
             "columns": client.GetColumns(ttypes.TGetColumnsReq(
                 sessionHandle=session, schemaName="default", tableName="photos")),
             "functions": client.GetFunctions(ttypes.TGetFunctionsReq(
                 sessionHandle=session, functionName="cnn%"))}
    listed = {}
    for name, response in calls.items():
        assert response.status.statusCode == ttypes.TStatusCode.SUCCESS_STATUS, response.status
        fetched = client.FetchResults(ttypes.TFetchResultsReq(
            operationHandle=response.operationHandle,
            orientation=ttypes.TFetchOrientation.FETCH_NEXT, maxRows=1000))
        listed[name] = fetched.results.columns
    assert "default" in listed["schemas"][0].stringVal.values
    assert "photos" in listed["tables"][2].stringVal.values
    assert listed["columns"][3].stringVal.values == [
        "path", "label", "image", "length", "modification_time"]
    assert set(listed["functions"][2].stringVal.values) == {"cnn", "cnn_features", "cnn_top_k"}
    connection.close()

    # beeline (the Hive JDBC driver) as an analyst
    result = beeline(server.url, "SELECT count(*) FROM photos; SELECT current_user();",
                     "-n", "alice")
    assert result.returncode == 0, result.stderr
    assert result.rows == [[str(len(photos))], ["alice"]]


def test_admins_may_do_what_analysts_may_not(server, tmp_path, photos):
    table_dir, out_dir = tmp_path / "table", tmp_path / "out"
    text = tmp_path / "lines.txt"
    text.write_text("a\nb\n")
    for sql in (f"CREATE TABLE ops_t (a STRING) USING parquet LOCATION '{table_dir}'",
                "INSERT INTO ops_t VALUES ('x')", "CACHE TABLE photos", "UNCACHE TABLE photos",
                f"ADD JAR '{JAR}'",
                "CREATE TEMPORARY FUNCTION up AS "
                "'org.apache.hadoop.hive.ql.udf.generic.GenericUDFUpper'",
                f"INSERT OVERWRITE DIRECTORY '{out_dir}' USING text SELECT 'x'",
                "SET spark.sql.thriftServer.queryTimeout=0",
                "CREATE GLOBAL TEMPORARY VIEW ops_g AS SELECT 1 AS one"):
        rows(server, "ops", sql)
    assert table_dir.is_dir() and any(out_dir.iterdir())
    connection = connect(server, "OPS")
    cursor = connection.cursor()
    cursor.execute("CREATE TEMPORARY FUNCTION up AS "
                   "'org.apache.hadoop.hive.ql.udf.generic.GenericUDFUpper'")
    cursor.execute("SELECT up('a'), (SELECT count(*) FROM global_temp.ops_g)")
    assert cursor.fetchall() == [("A", 1)]
    cursor.execute("SET spark.sql.runSQLOnFiles=true")
    cursor.execute(f"SELECT count(*) FROM text.`{text}`")
    assert cursor.fetchall() == [(2,)]
    cursor.execute(f"CREATE TEMPORARY VIEW lines USING text OPTIONS (path '{text}')")
    cursor.execute("SELECT count(*), xpath_string('<a>1</a>', 'a') FROM lines")
    assert cursor.fetchall() == [(2, "1")]
    connection.close()
    rows(server, "ops", "CREATE TABLE ops_h (line STRING) STORED AS TEXTFILE")  # Hive's
    rows(server, "ops", f"LOAD DATA LOCAL INPATH '{text}' INTO TABLE ops_h")
    assert rows(server, "ops", "SELECT count(*) FROM ops_h") == [(2,)]
    # an analyst reads neither the admin's tables nor loads data into them
    assert denied(server, "SELECT * FROM ops_t") == (
        "spark_catalog.default.ops_t is not one of the manifest's views; only admins may read it")
    assert denied(server, f"LOAD DATA LOCAL INPATH '{text}' INTO TABLE ops_h") == (
        "LOAD DATA reads files by path; only admins may")
    assert rows(server, "ops", "SELECT count(*) FROM ops_h") == [(2,)]
    # admins are held by Spark's own switches, which sql-dl serve turns on and sessions
    # cannot change: restricted mode (TRANSFORM, reflect) and the reflect allow list
    assert "RESTRICTED_MODE" in error_of(server, "ops", "SELECT TRANSFORM('x') USING 'id' AS (o STRING)")
    for sql in ("DROP TABLE ops_t", "DROP TABLE ops_h", "DROP VIEW global_temp.ops_g"):
        rows(server, "ops", sql)
    server_alive(server, photos)


def test_the_access_section(tmp_path, photos_dir):
    manifest = {"images": {"photos": {"path": str(photos_dir)}},
                "access": {"admins": [" Ops", "group:Admins"],
                           "grants": {"Photos": ["bob", "group:ml-team"]}}}
    loaded = load_manifest(manifest)
    assert loaded.access == AccessSpec(admins=("ops", "group:admins"),
                                       grants={"photos": ("bob", "group:ml-team")})
    assert load_manifest({"images": manifest["images"]}).access is None
    spec = policy_spec(loaded, {})
    assert spec["admins"] == ["ops", "group:admins"] and spec["views"]["photos"] == "photos"
    assert spec["views"]["sql_dl_models"] == "" and spec["settable"] == list(SETTABLE)

    bad = {"images": manifest["images"], "access": {
        "admins": "ops", "grants": {"nope": ["x"], "photos": [""]}, "owners": []}}
    with pytest.raises(ManifestError) as raised:
        load_manifest(bad)
    text = str(raised.value)
    assert "access.owners: unknown key; the keys are admins, grants" in text
    assert ("access.admins: must be a list of user names and group:NAME (an LDAP group), e.g. "
            "[ops, group:ml-team]. Received: admins='ops'") in text
    assert ("access.grants.nope: no model, preprocessor or image view has this name; the "
            "entries are photos") in text
    assert "access.grants.photos: must be a list of user names" in text

    # groups need the server to authenticate against LDAP, and to know where groups are
    problems = access_problems(loaded, {})
    assert problems == [
        "<manifest dict>: access: group:admins, group:ml-team are LDAP groups, and the server "
        "does not authenticate against LDAP; pass --hiveconf hive.server2.authentication=LDAP "
        "with its settings, or grant to user names. Received: hive.server2.authentication=NONE"]
    ldap = {"hive.server2.authentication": "LDAP",
            "hive.server2.authentication.ldap.url": "ldap://x"}
    assert "groupDNPattern=cn=%s,ou=groups" in access_problems(loaded, ldap)[0]
    ldap["hive.server2.authentication.ldap.groupDNPattern"] = "cn=%s,ou=groups,dc=x"
    assert access_problems(loaded, ldap) == []

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = run_cli("validate", str(path))
    assert result.returncode == 1 and "are LDAP groups" in result.stderr
    result = run_cli("validate", str(path), *(f"--hiveconf={k}={v}" for k, v in ldap.items()))
    assert result.returncode == 0, result.stderr


def test_functions_read_paths_only_under_the_image_folders(server, photos, tmp_path):
    refusal = ("PermissionError: sql-dl serve reads image bytes, or paths under the manifest's "
               "image folders, and nothing else. Received: path={!r}")
    for path in ("/etc/passwd", f"{tmp_path}/missing.png", "/root/.ssh/id_rsa",
                 "s3://b/k?endpoint_override=127.0.0.1:9", "http://127.0.0.1:9/x.png",
                 f"{photos[0].parent}/../../{photos[0].parent.name}/{photos[0].name}x"):
        assert rows(server, "alice", f"SELECT sql_dl_image_error('{path}')") == [
            (refusal.format(path),)], path
        assert rows(server, "alice", f"SELECT cnn('{path}')") == [(None,)]
    # a photo of the manifest's folder, by path, answers as its bytes do
    by_path = rows(server, "alice", f"SELECT cnn_top_k('{photos[0]}', 1)[0].class")
    by_bytes = rows(server, "alice", f"SELECT cnn_top_k(image, 1)[0].class FROM photos "
                                     f"WHERE path LIKE '%{photos[0].name}'")
    assert by_path == by_bytes and by_path[0][0] is not None


def test_the_server_listens_on_its_host_only_and_keeps_its_files_private(server):
    listening = listening_addresses(server.jvm_pid())
    assert ("127.0.0.1", server.port) in listening
    assert len(listening) >= 3  # the JDBC port, the driver's RPC endpoint, the block manager
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening
    home = Path(server.home)
    for path in (home, home / "operation_logs", home / "metastore_db"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    private = [(p, oct(p.stat().st_mode)) for p in home.rglob("*") if p.stat().st_mode & 0o077]
    assert private == []


def test_the_path_policy_checks_before_reading(tmp_path, photos):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    photo = folder / "sub" / "a.png"
    photo.write_bytes(photos[0].read_bytes())
    os.mkfifo(folder / "pipe.png")  # opening it for reading would block: it is never opened
    (folder / "zero.png").symlink_to("/dev/zero")  # a device, through a link out
    (folder / "out.png").symlink_to(photos[0])  # a link out of the folder
    with open(folder / "huge.png", "wb") as f:  # sparse: its size, but no bytes to read
        f.truncate(2 * 1024 ** 2)
    policy = PathPolicy([Root(root_of(f"{folder}/*/*.png"), 1024 ** 2),
                         Root("s3://bucket/photos", 1024 ** 2)])
    assert [r.prefix for r in policy.roots] == [str(folder), "s3://bucket/photos"]
    assert policy.read(str(photo)) == photo.read_bytes()
    assert policy.read(f"file:{photo}") == photo.read_bytes()

    outside = "sql-dl serve reads image bytes, or paths under the manifest's image folders, " \
              "and nothing else. Received: path={!r}"
    for path in ("/etc/passwd", str(tmp_path / "missing.png"), str(folder / "out.png"),
                 str(folder / "zero.png"),
                 f"{folder}/../{photos[0].name}", f"{folder}x/a.png", "/proc/self/environ",
                 "s3://bucket/photosx/a.png", "s3://bucket/photos/../k.png",
                 "s3://bucket/photos/a.png?endpoint_override=127.0.0.1:9", "gs://bucket/a.png"):
        with pytest.raises(PermissionError) as raised:
            policy.read(path)
        assert str(raised.value) == outside.format(path), path
    for name, why in (("pipe.png", "not a regular file (a device, FIFO or directory)"),
                      ("sub", "not a regular file (a device, FIFO or directory)"),
                      ("huge.png", "2097152 bytes is over the image view's max_file_size of "
                                   "1048576 bytes")):
        with pytest.raises(PermissionError, match=re.escape(why)):
            policy.read(str(folder / name))
    with pytest.raises(FileNotFoundError):  # inside the folder, a missing file is just that
        policy.read(str(folder / "missing.png"))
