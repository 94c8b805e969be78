"""Plugin mode: the stock Spark SQL entry points of the pyspark wheel (``bin/spark-sql``, the
Thrift Server through ``spark-submit``, a Spark Connect server from
``sbin/start-connect-server.sh``) given only ``sql-dl spark-conf``'s settings, with no sql_dl
code in a Python driver. Each runs the manifest's functions on a view and equals Keras."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers.plugin import SPARK_HOME, TIMEOUT, plugin_conf, stock_thrift_server, wait_for_port
from helpers.processes import free_port, run_cli, write_manifest
from helpers.reference import assert_equal_keras, expected_best, local
from sql_dl.driver.vector_index import distances
from sql_dl.paths import JAR

def spark_sql(work: Path, conf: list[str], statements: dict[str, str],
              env: dict[str, str] | None = None) -> tuple[dict[str, list[list[str]]], str]:
    """Runs ``statements`` (by name) in one stock ``spark-sql`` process in ``work`` (its
    metastore, warehouse and prediction cache there); returns each statement's rows (tab-
    separated fields) and stderr; a statement named "" is run without the line that marks
    where its rows start. A failed statement does not stop the next."""
    script = "".join(f"SELECT '== {name}';\n{sql};\n" if name else f"{sql};\n"
                     for name, sql in statements.items())
    (work / "script.sql").write_text(script)
    result = subprocess.run(
        [SPARK_HOME / "bin" / "spark-sql", "--master", "local[2]", *conf,
         "--conf", "spark.ui.enabled=false",
         "--conf", f"spark.sql.warehouse.dir={work / 'warehouse'}",
         "--hiveconf", "hive.cli.errors.ignore=true", "-S", "-f", work / "script.sql"],
        cwd=work, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "SQL_DL_CACHE": str(work / "cache"), **(env or {})})
    rows: dict[str, list[list[str]]] = {}
    current = None
    for line in result.stdout.splitlines():
        if line.startswith("== "):
            current = rows.setdefault(line[3:], [])
        elif current is not None:
            current.append(line.split("\t"))
    return rows, result.stderr


@pytest.fixture(scope="module")
def plugin_manifest(tmp_path_factory, photos_dir, cnn_file, labels_file) -> Path:
    return write_manifest(tmp_path_factory.mktemp("plugin") / "models.yaml", photos_dir,
                          cnn_file, labels_file, indexes={
                              "photos_like": {"view": "photos", "function": "cnn_features"}})


def test_spark_conf_prints_the_settings_of_plugin_mode(plugin_manifest, tmp_path):
    words = plugin_conf(plugin_manifest)
    assert words[:2] == ["--jars", str(JAR)]
    settings = dict(w.split("=", 1) for w in words[2:] if w != "--conf")
    assert settings["spark.sql.extensions"] == "sql_dl.spark.SqlDlExtensions"
    assert settings["spark.sql_dl.manifest"] == str(plugin_manifest)
    python = os.path.normpath(sys.executable)
    assert settings["spark.pyspark.python"] == settings["spark.sql_dl.python"] == python
    archived = run_cli("spark-conf", "--manifest", plugin_manifest, "--archive",
                       "hdfs:///envs/sql_dl.tar.gz", "--format", "defaults")
    lines = dict(line.split(" ", 1) for line in archived.stdout.splitlines())
    assert lines["spark.archives"] == "hdfs:///envs/sql_dl.tar.gz#environment"
    assert lines["spark.pyspark.python"] == "./environment/bin/python"
    assert lines["spark.pyspark.driver.python"] == python
    missing = run_cli("spark-conf", "--manifest", plugin_manifest, "--archive", "no-such.tar.gz")
    assert missing.returncode == 1 and "--archive: " in missing.stderr \
        and "no-such.tar.gz does not exist; build it with sql-dl pack" in missing.stderr
    spaced = tmp_path / "my models"
    spaced.mkdir()
    (spaced / "m.yaml").write_text(plugin_manifest.read_text())
    split = run_cli("spark-conf", "--manifest", spaced / "m.yaml")  # $(...) would split it
    assert split.returncode == 1 and "use --format defaults > sql_dl.conf" in split.stderr
    assert f"spark.sql_dl.manifest {spaced / 'm.yaml'}" in run_cli(
        "spark-conf", "--manifest", spaced / "m.yaml", "--format", "defaults").stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: {m: {path: /no/such.keras}}\n")
    refused = run_cli("spark-conf", "--manifest", broken)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "models.m.path" in refused.stderr and "/no/such.keras" in refused.stderr


def test_stock_spark_sql_gets_the_manifest(plugin_manifest, photos, cnn_file, tmp_path):
    n = len(photos)
    rows, stderr = spark_sql(tmp_path, plugin_conf(plugin_manifest), {
        # top-N before the model: only the 2 rows returned are scored (and cached)
        "top": "SELECT path, cnn(image) FROM photos ORDER BY path DESC LIMIT 2",
        # (the index embeds every image with cnn_features as the session starts)
        "cached": "SELECT model, entries FROM sql_dl_cache WHERE model = 'cnn'",
        "all": "SELECT path, label, cnn(image), cnn_top_k(image, 1)[0].class, "
               "size(cnn_features(image)) FROM photos ORDER BY path",
        "again": "SELECT count(cnn(image)) FROM photos",
        "hits": "SELECT model, entries, hits FROM sql_dl_cache ORDER BY model",
        "describe": "DESCRIBE FUNCTION cnn_top_k",
        "functions": "SHOW USER FUNCTIONS",
        "views": "SELECT view, state, files FROM sql_dl_views",
        "models": "SELECT function, kind FROM sql_dl_models WHERE model = 'cnn' ORDER BY 1",
        "wrong": "SELECT cnn_top_k(image, 'three') FROM photos",
        "vectors": "SELECT path, to_json(cnn_features(image)) FROM photos",
        "like": "SELECT * FROM photos_like((SELECT min(path) FROM photos), 3)",
        "indexes": "SELECT index, state, images FROM sql_dl_indexes",
    })
    assert [local(r[0]) for r in rows["top"]] == photos[::-1][:2], stderr[-3000:]
    assert rows["cached"] == [["cnn", "2"]]
    assert_equal_keras([(r[0], r[2], r[3]) for r in rows["all"]], photos, cnn_file)
    assert [r[1] for r in rows["all"]] == [p.parent.name for p in photos]
    assert rows["again"] == [[str(n)]]
    assert rows["hits"][0][:2] == ["cnn", str(n)] and int(rows["hits"][0][2]) >= n
    described = "\n".join("\t".join(r) for r in rows["describe"])
    assert "Usage: cnn_top_k(image, k)" in described and "labels 5 (cat" in described
    assert {"cnn", "cnn_features", "cnn_top_k", "p32", "sql_dl_thumbnail"} <= {
        r[0].split(".")[-1] for r in rows["functions"]}
    assert rows["views"] == [["photos", "ready", str(n)]]
    assert [r[0] for r in rows["models"]] == ["cnn", "cnn_features", "cnn_top_k"]
    assert rows["wrong"] == []
    assert "cnn_top_k(image, k): k must be an INT. Received: k STRING 'three'" in stderr
    # the index's table function: numpy's nearest, on the vectors cnn_features gives
    vectors = {path: np.asarray(json.loads(v), dtype=np.float32) for path, v in rows["vectors"]}
    query = min(vectors)
    exact = sorted(distances(vectors[query], np.stack(list(vectors.values())), "cosine"))[:3]
    np.testing.assert_allclose([float(r[2]) for r in rows["like"]], exact, atol=1e-5)
    assert query in [r[0] for r in rows["like"] if float(r[2]) < 1e-6]
    assert rows["indexes"] == [["photos_like", "ready", str(n)]]


def test_a_broken_manifest_fails_the_first_statement_only(tmp_path, photos_dir):
    manifest = tmp_path / "models.yaml"
    manifest.write_text(f"images: {{photos: {{path: {photos_dir}}}}}\n")  # valid: conf checks it
    conf = plugin_conf(manifest)
    manifest.write_text("models: {m: {path: /no/such.keras}}\nimages: {photos: {pathh: x}}\n")
    rows, stderr = spark_sql(tmp_path, conf, {"": "USE default", "first": "SELECT 1",
                                              "second": "SELECT 2", "view": "SELECT * FROM photos"})
    lines = stderr.splitlines()  # each problem on a line of its own
    assert any(line.startswith(f"{manifest}: models.m.path") for line in lines), stderr[-3000:]
    assert any(line.startswith(f"{manifest}: images.photos") for line in lines)
    assert f"sql_dl cannot register the manifest {manifest} (spark.sql_dl.manifest)" in stderr
    # USE passes; the next statement (the mark of "first") fails, the later ones run
    assert "first" not in rows and rows["second"] == [["2"]]
    assert "TABLE_OR_VIEW_NOT_FOUND" in stderr  # the session goes on without the manifest


@pytest.mark.slow
def test_plugin_mode_names_a_python_without_sql_dl_and_a_version_mismatch(
        plugin_manifest, tmp_path):
    conf = plugin_conf(plugin_manifest)
    python = shutil.which("python3", path="/usr/bin")  # the system's: no sql_dl
    other = [w.replace(sys.executable, python) if w.startswith("spark.sql_dl.python=") else w
             for w in conf]
    _, stderr = spark_sql(tmp_path, other, {"q": "SELECT 1"})
    assert "-m sql_dl.driver.plugin exited with status 1 (its last output: " in stderr
    assert "No module named 'sql_dl'" in stderr and f"spark.sql_dl.python={python}" in stderr
    jar = tmp_path / "older.jar"  # the same jar, as an install of another version built it
    with zipfile.ZipFile(JAR) as source, zipfile.ZipFile(jar, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "sql_dl/version.properties":
                data = b"version=0.0.1\n"
            target.writestr(item, data)
    rows, stderr = spark_sql(tmp_path, [str(jar) if w == str(JAR) else w for w in conf],
                             {"q": "SELECT 1", "again": "SELECT 2"})
    assert "sql_dl's jar is version 0.0.1, but the sql_dl of " in stderr
    assert rows["again"] == [["2"]]


def refusal(cursor, sql: str) -> str:
    """The message of the error ``sql`` fails with."""
    from pyhive.exc import OperationalError

    with pytest.raises(OperationalError) as caught:
        cursor.execute(sql)
    return str(caught.value)


@pytest.mark.slow
def test_the_stock_thrift_server_serves_the_manifest(tmp_path, photos, photos_dir, cnn_file,
                                                     labels_file):
    from pyhive import hive

    live = tmp_path / "live"
    live.mkdir()
    for photo in photos[:3]:
        shutil.copy(photo, live / photo.name)
    manifest = write_manifest(tmp_path / "models.yaml", photos_dir, cnn_file, labels_file,
                              live={"path": str(live)},
                              indexes={"live_like": {"view": "live", "function": "cnn"}})
    with stock_thrift_server(tmp_path, plugin_conf(manifest)) as port:
        connection = hive.connect("127.0.0.1", port, username="alice")
        cursor = connection.cursor()
        cursor.execute("SELECT path, cnn(image), cnn_top_k(image, 1)[0].class FROM photos "
                       "ORDER BY path")
        assert_equal_keras(cursor.fetchall(), photos, cnn_file)
        cursor.execute("DESCRIBE FUNCTION EXTENDED cnn")
        assert any("Usage: cnn(image)" in r[0] for r in cursor.fetchall())
        cursor.execute("SELECT count(*) FROM live")
        assert cursor.fetchall() == [(3,)]
        shutil.copy(photos[3], live / "added.png")  # the view follows its folder
        cursor.execute("SELECT count(*) FROM live")
        assert cursor.fetchall() == [(4,)]
        other = hive.connect("127.0.0.1", port, username="bob").cursor()  # a session of its own
        other.execute("SELECT count(cnn_features(image)) FROM live")
        assert other.fetchall() == [(4,)]
        other.execute("SELECT path, distance FROM live_like((SELECT image FROM live WHERE "
                      "path LIKE '%/added.png'), 5)")  # the index follows the folder too
        found = other.fetchall()
        assert len(found) == 4 and any(path.endswith("/added.png") and distance < 1e-6
                                       for path, distance in found)
        connection.close()


@pytest.mark.slow
def test_the_access_policy_holds_in_the_stock_thrift_server(tmp_path, photos, photos_dir,
                                                            cnn_file, labels_file):
    from pyhive import hive

    manifest = write_manifest(tmp_path / "models.yaml", photos_dir, cnn_file, labels_file,
                              access={"admins": ["ops"], "grants": {"p32": ["bob"],
                                                                    "secret": ["bob"]}},
                              secret={"path": str(photos_dir)})
    conf = plugin_conf(manifest)
    assert "spark.sql.runSQLOnFiles=false" in conf  # what spark-conf adds for an access section
    written = tmp_path / "written"
    with stock_thrift_server(tmp_path, conf) as port:
        alice = hive.connect("127.0.0.1", port, username="Alice").cursor()
        alice.execute("SELECT cnn_top_k(image, 1)[0].class FROM photos ORDER BY path")
        assert [r[0] for r in alice.fetchall()] == expected_best(cnn_file, photos)
        alice.execute("SELECT function FROM sql_dl_models ORDER BY 1")
        listed = [r[0] for r in alice.fetchall()]
        assert "cnn_top_k" in listed and "p32" not in listed  # granted to bob only
        assert "function p32 (of p32) is granted to bob only" in refusal(
            alice, "SELECT p32(image) FROM photos")
        assert "view secret (of secret) is granted to bob only" in refusal(
            alice, "SELECT count(*) FROM secret")
        assert "granted to bob only" in refusal(
            alice, "CREATE OR REPLACE TEMPORARY VIEW photos AS SELECT * FROM secret")
        assert "reflect, java_method and try_reflect call Java methods" in refusal(
            alice, "SELECT reflect('java.lang.System', 'exit', 1)")
        assert "INSERT OVERWRITE DIRECTORY writes files by path" in refusal(
            alice, f"INSERT OVERWRITE DIRECTORY '{written}' SELECT 1")
        assert "CREATE TABLE AS SELECT changes the catalog" in refusal(
            alice, "CREATE TABLE t AS SELECT 1 AS x")
        assert "SET spark.sql.runSQLOnFiles changes a setting" in refusal(
            alice, "SET spark.sql.runSQLOnFiles=true")
        assert "reads files by path" in refusal(alice, "SELECT * FROM text.`/etc/passwd`")
        assert not written.exists()
        bob = hive.connect("127.0.0.1", port, username="bob").cursor()
        bob.execute("SELECT count(p32(image)) FROM secret")
        assert bob.fetchall() == [(len(photos),)]
        ops = hive.connect("127.0.0.1", port, username="ops").cursor()
        ops.execute("SHOW TABLES")
        assert "t" not in [r[1] for r in ops.fetchall()]  # alice's CREATE TABLE did nothing
        ops.execute("CREATE TABLE kept AS SELECT 1 AS x")  # an admin may
        ops.execute("SELECT x FROM kept")
        assert ops.fetchall() == [(1,)]
        alice.execute("SELECT count(*) FROM photos")  # the server is still up for alice
        assert alice.fetchall() == [(len(photos),)]


@pytest.mark.slow
def test_a_governed_manifest_is_never_served_open(tmp_path, photos_dir, cnn_file, labels_file):
    from pyhive import hive

    manifest = write_manifest(tmp_path / "models.yaml", photos_dir, cnn_file, labels_file,
                              access={"admins": ["ops"]})
    unlocked = []
    for word in plugin_conf(manifest):  # the settings of an ungoverned manifest only
        if unlocked and unlocked[-1] == "--conf" and word.startswith((
                "spark.sql.restrictedMode", "spark.sql.reflect", "spark.sql.runSQLOnFiles",
                "spark.sql.variable")):
            unlocked.pop()
        else:
            unlocked.append(word)
    from pyhive.exc import OperationalError

    with stock_thrift_server(tmp_path, unlocked) as port:
        for _ in range(2):  # every statement is refused (PyHive's USE as it connects first)
            with pytest.raises(OperationalError) as caught:
                hive.connect("127.0.0.1", port, username="alice").cursor().execute("SELECT 1")
            assert "has an access section, and this server does not start with the settings" \
                in str(caught.value) and "--conf spark.sql.runSQLOnFiles=false" in str(caught.value)


@pytest.mark.slow
def test_a_connect_server_serves_a_client_that_never_imports_sql_dl(
        tmp_path, plugin_manifest, photos, cnn_file):
    port = free_port()
    env = {**os.environ, "SPARK_PID_DIR": str(tmp_path), "SPARK_LOG_DIR": str(tmp_path / "logs"),
           "SPARK_IDENT_STRING": f"sql_dl-test-{port}", "SQL_DL_CACHE": str(tmp_path / "cache")}
    subprocess.run([SPARK_HOME / "sbin" / "start-connect-server.sh", "--master", "local[2]",
                    *plugin_conf(plugin_manifest), "--conf", "spark.ui.enabled=false",
                    "--conf", f"spark.connect.grpc.binding.port={port}",
                    "--conf", f"spark.sql.warehouse.dir={tmp_path / 'warehouse'}"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=60)
    client = textwrap.dedent(f"""
        import json, sys
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.remote("sc://127.0.0.1:{port}").getOrCreate()
        rows = spark.sql("SELECT path, cnn(image) AS p, cnn_top_k(image, 1)[0].class AS best "
                         "FROM photos ORDER BY path").collect()
        described = [r[0] for r in spark.sql("DESCRIBE FUNCTION cnn_features").collect()]
        like = spark.sql("SELECT * FROM photos_like((SELECT image FROM photos "
                         "ORDER BY path LIMIT 1), 3)")
        nearest = [[r.path, r.distance] for r in like.collect()]
        print(json.dumps({{"rows": [[r.path, r.p, r.best] for r in rows],
                          "count": spark.table("photos").count(), "described": described,
                          "nearest": nearest, "query": like.schema["path"].metadata,
                          "sql_dl": sorted(m for m in sys.modules if m.startswith("sql_dl"))}}))
    """)
    try:
        wait_for_port(port, None, next((tmp_path / "logs").glob("*.out"), tmp_path))
        result = subprocess.run([sys.executable, "-c", client], capture_output=True, text=True,
                                timeout=TIMEOUT, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        answer = json.loads(result.stdout.splitlines()[-1])
        assert answer["sql_dl"] == []
        assert_equal_keras(answer["rows"], photos, cnn_file)
        assert answer["count"] == len(photos)
        assert any("Usage: cnn_features(image)" in line for line in answer["described"])
        # the index's table function, through Connect: the first photo (or its twin) first
        assert len(answer["nearest"]) == 3 and answer["nearest"][0][1] < 1e-6
        assert answer["query"]["sql_dl_query"] == "image"
        assert answer["query"]["sql_dl_query_thumbnail"].startswith("data:image/")
    finally:
        subprocess.run([SPARK_HOME / "sbin" / "stop-connect-server.sh"], env=env,
                       capture_output=True, timeout=120)
