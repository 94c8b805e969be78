"""sql-dl serve, started as users start it, queried through beeline and PyHive."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from pyhive.exc import OperationalError
from helpers.data import BUILT_IN, CLASS_NAMES
from helpers.processes import (answer, beeline, jdbc_functions, listening_addresses, Server,
                               write_manifest)
from helpers.reference import expected_best, local

from sql_dl.cli.catalog import CACHE_VIEW_REFRESH

@pytest.fixture
def own_manifest(tmp_path, photos_dir, cnn_file, labels_file):
    return write_manifest(tmp_path / "models.yaml", photos_dir, cnn_file, labels_file)


def test_ready_line_and_beeline_results_match_keras(server, cnn_file, photos):
    assert server.url == f"jdbc:hive2://127.0.0.1:{server.port}/"
    result = beeline(server.url, "SELECT path, cnn_top_k(image, 1)[0].description FROM photos "
                                 "ORDER BY path")
    assert result.returncode == 0, result.stderr
    files = [local(path) for path, _ in result.rows]
    assert files == photos
    assert [best for _, best in result.rows] == expected_best(cnn_file, files)


def test_functions_describe_themselves_over_jdbc(server):
    from pyhive import hive

    listed = jdbc_functions(server.port, "cnn%")  # with databases default and sql_dl_internal
    assert [(schema, name) for schema, name, _ in listed] == [
        ("default", "cnn"), ("default", "cnn_features"), ("default", "cnn_top_k")]
    remarks = {name: text for _, name, text in listed}
    assert remarks["cnn_top_k"].startswith("Usage: cnn_top_k(image, k) - The k most probable of "
                                           "the 5 classes of model cnn (")
    assert "labels 5 (cat, dog, fish, bird, frog)" in remarks["cnn_top_k"]
    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()
    cursor.execute("DESCRIBE FUNCTION EXTENDED cnn")
    lines = [row[0] for row in cursor.fetchall()]
    assert lines[:2] == ["Function: cnn", "Class: sql_dl.executor.udfs.model_udf"]
    assert lines[2].startswith("Usage: cnn(image) - The 5 outputs of model cnn (")
    assert "      > SELECT cnn(image) FROM photos LIMIT 5;" in "\n".join(lines)
    cursor.execute("SHOW FUNCTIONS LIKE 'cnn*'")
    assert [row[0] for row in cursor.fetchall()] == ["cnn", "cnn_features", "cnn_top_k"]


def test_connections_are_isolated_and_all_see_the_manifest(server, cnn_file, photos):
    from pyhive import hive

    alice = hive.connect(host="127.0.0.1", port=server.port, username="alice").cursor()
    bob = hive.connect(host="127.0.0.1", port=server.port, username="bob").cursor()
    ops = hive.connect(host="127.0.0.1", port=server.port, username="ops").cursor()  # admin
    ops.execute("CREATE DATABASE IF NOT EXISTS alice_db")
    alice.execute("CREATE TEMPORARY VIEW alices AS SELECT 1 AS one")
    alice.execute("SET spark.sql.session.timeZone=Asia/Tokyo")
    alice.execute("USE alice_db")
    alice.execute("SELECT current_database(), (SELECT one FROM alices), current_timezone()")
    assert alice.fetchall() == [("alice_db", 1, "Asia/Tokyo")]

    with pytest.raises(OperationalError, match="TABLE_OR_VIEW_NOT_FOUND"):
        bob.execute("SELECT * FROM alices")
    bob.execute("SELECT current_database(), current_timezone()")
    assert bob.fetchall() != [("default", "Asia/Tokyo")]
    alice.execute("USE default")  # the manifest's views live in the default database

    # both see functions, views and sql_dl_models, unqualified; p32 is granted to bob only
    for cursor, granted in ((alice, []), (bob, ["p32"])):
        cursor.execute("SELECT path, cnn_top_k(image, 1)[0].description FROM photos ORDER BY path")
        rows = cursor.fetchall()
        assert [best for _, best in rows] == expected_best(cnn_file, [local(p) for p, _ in rows])
        cursor.execute("SELECT function FROM sql_dl_models ORDER BY function")
        assert [r[0] for r in cursor.fetchall()] == ["cnn", "cnn_features", "cnn_top_k",
                                                     *granted, *BUILT_IN]
    assert set(CLASS_NAMES) >= {r[1] for r in rows}


def test_eight_concurrent_connections_agree_with_keras(server, cnn_file, photos):
    from concurrent.futures import ThreadPoolExecutor

    from pyhive import hive

    def query(i: int):
        cursor = hive.connect(host="127.0.0.1", port=server.port, username=f"user{i}").cursor()
        cursor.execute(f"SELECT path, cnn_top_k(image, 1)[0].description, {i} FROM photos ORDER BY path")
        return cursor.fetchall()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(query, range(8)))
    expected = expected_best(cnn_file, photos)
    for i, rows in enumerate(results):
        assert [local(p) for p, _, _ in rows] == photos
        assert [best for _, best, _ in rows] == expected
        assert {n for _, _, n in rows} == {i}


# Work for both cores, about 3.4 million rows a second (analysts may not call Thread.sleep
# through reflect)
SLOW = ("SELECT count(*) FROM range(0, {n}, 1, 2) "
        "WHERE sha2(CAST(id AS STRING), 512) = ''")


def test_client_cancel_stops_its_spark_job(server, photos):
    from pyhive import hive
    from TCLIService.ttypes import TOperationState

    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()
    cursor.execute(SLOW.format(n=240_000_000), async_=True)  # a minute of work on both cores
    time.sleep(3)
    cursor.cancel()
    assert cursor.poll().operationState == TOperationState.CANCELED_STATE
    started = time.monotonic()
    other = hive.connect(host="127.0.0.1", port=server.port).cursor()
    other.execute("SELECT count(cnn(image)) FROM photos")
    assert other.fetchall() == [(len(photos),)]
    assert time.monotonic() - started < 20  # the cores were freed, not busy for a minute


def test_client_killed_mid_query_leaves_the_server_healthy(server, photos):
    client = subprocess.Popen([sys.executable, "-c", (
        "from pyhive import hive\n"
        f"c = hive.connect(host='127.0.0.1', port={server.port}).cursor()\n"
        "print('sending', flush=True)\n"
        f"c.execute({SLOW.format(n=8_000_000)!r})\n")], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline() == "sending\n"
    time.sleep(2)  # mid-query: about 8 s of work on both cores
    client.kill()
    client.wait()
    from pyhive import hive

    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()
    cursor.execute("SELECT count(cnn(image)) FROM photos")
    assert cursor.fetchall() == [(len(photos),)]
    assert server.process.poll() is None


def jvm_open_files(server: Server) -> int:
    """Open file descriptors (sockets included) of the server's JVM, a child of its process."""
    return len(os.listdir(f"/proc/{server.jvm_pid()}/fd"))


def test_fifty_short_connections_do_not_exhaust_the_server(server, cnn_file, photos):
    from concurrent.futures import ThreadPoolExecutor

    from pyhive import hive

    baseline = jvm_open_files(server)

    def connect(i: int):
        connection = hive.connect(host="127.0.0.1", port=server.port, username=f"flood{i}")
        cursor = connection.cursor()
        cursor.execute(f"SELECT {i}")
        assert cursor.fetchall() == [(i,)]
        if i % 2:
            connection.close()
        else:  # gone without closing its session, as a crashed client goes
            connection._transport.close()

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(connect, range(50)))
    connection = hive.connect(host="127.0.0.1", port=server.port)
    cursor = connection.cursor()
    cursor.execute("SELECT path, cnn_top_k(image, 1)[0].description FROM photos ORDER BY path")
    assert [best for _, best in cursor.fetchall()] == expected_best(cnn_file, photos)
    connection.close()
    deadline = time.monotonic() + 30
    while jvm_open_files(server) > baseline + 10 and time.monotonic() < deadline:
        time.sleep(1)
    assert jvm_open_files(server) <= baseline + 10  # sockets and sessions were released


def test_argument_and_worker_errors_reach_jdbc_clients_as_one_line(server, photos):
    from pyhive import hive

    cursor = hive.connect(host="127.0.0.1", port=server.port, username="ops").cursor()
    with pytest.raises(OperationalError) as raised:
        cursor.execute("SELECT cnn_top_k(image, 'three') FROM photos")
    assert raised.value.args[0].status.errorMessage.startswith(
        "cnn_top_k(image, k): k must be an INT. Received: k STRING 'three'")
    with pytest.raises(OperationalError) as raised:  # a value the analysis cannot know
        cursor.execute("SELECT cnn_top_k(image, -size(array(1))) FROM photos")
    assert raised.value.args[0].status.errorMessage == (
        "FunctionArgumentError: cnn_top_k(x, k): k must be 0 or more (0 gives an empty array). "
        "Received: k=-1")
    cursor.execute("SELECT count(*) FROM photos")  # the session goes on
    assert cursor.fetchall() == [(len(photos),)]


def test_undecodable_images_are_counted_per_query_in_the_log(server):
    from pyhive import hive

    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()
    cursor.execute("SELECT cnn(CAST(concat('not an image ', id) AS BINARY)) FROM range(3)")
    assert cursor.fetchall() == [(None,)] * 3
    log = Path(server.log.name)
    deadline = time.monotonic() + 10
    while "3 image(s) could not be decoded" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert re.search(r"query \S+: 3 image\(s\) could not be decoded and gave NULL", log.read_text())


def test_images_from_the_prediction_cache_are_counted_and_listed(server, photos):
    from pyhive import hive

    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()
    for _ in range(2):
        cursor.execute("SELECT cnn(image) FROM photos")
        assert len(cursor.fetchall()) == len(photos)
    cursor.close()  # the server counts a statement when it is closed or the next one starts
    log = Path(server.log.name)
    line = f"Images: 0 scored, {len(photos)} from the prediction cache"
    deadline = time.monotonic() + 10
    while line not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert re.search(rf"query \S+: {line}", log.read_text())
    time.sleep(CACHE_VIEW_REFRESH)
    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()
    cursor.execute("SELECT 1")  # its end refreshes sql_dl_cache
    cursor.fetchall()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the views are refreshed in the background
        cursor.execute("SELECT model, entries, hits FROM sql_dl_cache WHERE model = 'cnn'")
        rows = cursor.fetchall()
        # refreshed with it: the server's workers hold cnn (warmed up at start), on no GPU
        cursor.execute("SELECT DISTINCT model, device FROM sql_dl_devices WHERE model = 'cnn'")
        devices = cursor.fetchall()
        if rows and rows[0][2] >= len(photos) and devices:
            break
        time.sleep(0.5)
    assert rows[0][1] >= len(photos) and rows[0][2] >= len(photos)
    assert devices == [("cnn", "default")]


def test_a_long_lived_connection_sees_the_folder_change(server, photos, live_dir):
    from pyhive import hive

    cursor = hive.connect(host="127.0.0.1", port=server.port).cursor()

    def paths(view: str) -> list[str]:
        cursor.execute(f"SELECT path FROM {view} ORDER BY path")
        return [local(row[0]).name for row in cursor.fetchall()]

    before = sorted(f.name for f in live_dir.iterdir())
    assert paths("recent") == paths("recent_hourly") == before
    gone = sorted(live_dir.iterdir())[0]
    gone.unlink()
    added = live_dir / "added.png"
    shutil.copy(photos[5], added)
    # recent_hourly reuses the listing (max_staleness: 1h): no new file, and the deleted one
    # is still listed, with a NULL image, counted and named once in the server's log
    cursor.execute("SELECT path, image IS NULL FROM recent_hourly ORDER BY path")
    rows = [(local(path).name, null) for path, null in cursor.fetchall()]
    assert [name for name, _ in rows] == before
    assert [name for name, null in rows if null] == [gone.name]
    now = sorted(f.name for f in live_dir.iterdir())
    assert paths("recent") == now  # lists the changed folder again
    assert paths("recent_hourly") == now  # the same folder's catalog, fresher than an hour
    cursor.close()  # the server counts a statement when it is closed or the next one starts
    log = Path(server.log.name)
    deadline = time.monotonic() + 10
    # the query line (Python) and the JVM's listener line arrive in either order
    while (not all(part in log.read_text() for part in ("were deleted after", f"listed: file:{gone}"))
           and time.monotonic() < deadline):
        time.sleep(0.5)
    text = log.read_text()
    assert re.search(r"query \S+: 1 image file\(s\) were deleted after their folder was listed; "
                     r"their images are NULL", text)
    assert text.count(f"deleted after the folder was listed: file:{gone}") == 1


def wait_for_line(server: Server, prefix: str, after: int) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in server.lines[after:]:
            if line.startswith(prefix):
                return line
        time.sleep(0.2)
    raise AssertionError(f"no {prefix!r} line; stdout: {server.lines}")


def reload(server: Server, manifest: Path, data) -> str:
    """Writes ``data`` (a manifest dict, or text) and sends SIGHUP; returns the reload line."""
    manifest.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    seen = len(server.lines)
    server.process.send_signal(signal.SIGHUP)
    return wait_for_line(server, "reload", seen)


@pytest.mark.slow
def test_sighup_reloads_keep_open_connections_working(own_manifest, tmp_path, cnn_file, photos,
                                                      labels_file, photos_dir):
    from pyhive import hive

    server = Server(own_manifest, tmp_path / "home")
    time.sleep(2)
    server.process.send_signal(signal.SIGHUP)  # while it starts: kept for after the start
    server.wait_ready()
    assert wait_for_line(server, "reload", 0) == f"reloaded: {own_manifest}"
    kept = hive.connect(host="127.0.0.1", port=server.port).cursor()  # open across reloads

    def functions(cursor) -> list[str]:
        cursor.execute("SELECT function FROM sql_dl_models ORDER BY function")
        return [r[0] for r in cursor.fetchall()]

    assert functions(kept) == ["cnn", "cnn_features", "cnn_top_k", "p32", *BUILT_IN]
    pngs = [f for f in photos if f.suffix == ".png"]
    # the second manifest also moves the model to the OpenVINO engine (float32, which gives
    # Keras's top-1)
    second = {"preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
              "models": {"cnn2": {"path": str(cnn_file), "preprocessor": "p32",
                                  "labels": str(labels_file), "engine": "openvino"}},
              "images": {"pngs": {"path": str(photos_dir), "glob": "*.png"}},
              "access": {"grants": {"p32": ["bob"]}}}  # a grant, for open connections too
    try:
        first = yaml.safe_load(own_manifest.read_text())
        for data in (second, first):  # reloads there and back, one open connection throughout
            assert reload(server, own_manifest, data) == f"reloaded: {own_manifest}"
            name, view, files = ("cnn2", "pngs", pngs) if data is second else ("cnn", "photos", photos)
            granted = [] if data is second else ["p32"]  # kept's user is not bob
            assert functions(kept) == sorted([name, f"{name}_features", f"{name}_top_k",
                                              *granted, *BUILT_IN])
            kept.execute(f"SELECT path FROM {view} ORDER BY path")
            assert [local(p) for (p,) in kept.fetchall()] == files
            if data is second:
                with pytest.raises(OperationalError, match="AccessDenied: function p32 "):
                    kept.execute(f"SELECT p32(image) FROM {view}")
            else:
                kept.execute(f"SELECT count(p32(image)) FROM {view}")
                assert kept.fetchall() == [(len(files),)]

            fresh = hive.connect(host="127.0.0.1", port=server.port).cursor()
            fresh.execute(f"SELECT path, {name}_top_k(image, 1)[0].description FROM {view} "
                          "ORDER BY path")
            rows = fresh.fetchall()
            assert [local(p) for p, _ in rows] == files
            assert [best for _, best in rows] == expected_best(cnn_file, files)
            fresh.execute(f"SELECT source FROM sql_dl_models WHERE function = '{name}'")
            assert fresh.fetchall()[0][0].endswith(
                "; engine openvino, float32" if data is second else ".keras")
            other, other_view = ("cnn", "photos") if data is second else ("cnn2", "pngs")
            with pytest.raises(OperationalError, match="UNRESOLVED_ROUTINE"):
                fresh.execute(f"SELECT {other}_top_k(image, 1) FROM {view}")
            with pytest.raises(OperationalError, match="TABLE_OR_VIEW_NOT_FOUND"):
                fresh.execute(f"SELECT * FROM {other_view}")
        errors = [line for line in Path(server.log.name).read_text().splitlines() if " ERROR " in line]
        assert len(errors) == 5, errors  # a clean start and reloads: only the 5 failed statements
        # Spark's own line, logged by sql_dl's statement operation (a subclass of Spark's)
        assert all("ConciseStatement: Error executing query" in e for e in errors)

        assert reload(server, own_manifest, "models: {broken: {}}\n") == f"reload failed: {own_manifest}"
        assert functions(kept) == ["cnn", "cnn_features", "cnn_top_k", "p32", *BUILT_IN]
        fresh = hive.connect(host="127.0.0.1", port=server.port).cursor()  # functions: new ones
        fresh.execute("SELECT count(cnn(image)) FROM photos")
        assert fresh.fetchall() == [(len(photos),)]
    finally:
        code, seconds = server.stop()
    assert (code, seconds < 15) == (0, True)  # SIGTERM stops it cleanly, within seconds

    # without the prediction cache the query below stays long (about 25 s); 5,000 copies
    # instead of 1,000 exhaust the local driver's 1 GB heap
    own_manifest.write_text(yaml.safe_dump({**first, "cache": False}))
    again = Server(own_manifest, tmp_path / "home")  # a restart on the same --home
    again.wait_ready()
    outcome: list[BaseException | None] = []

    def long_query() -> None:
        cursor = hive.connect(host="127.0.0.1", port=again.port).cursor()
        try:
            cursor.execute("SELECT count(cnn(image)) FROM photos CROSS JOIN range(1000)")
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - what the client saw is the point
            outcome.append(e)

    client = threading.Thread(target=long_query)
    client.start()
    time.sleep(3)
    assert again.stop()[0] == 0  # SIGTERM with the query running
    client.join(60)
    assert outcome and outcome[0] is not None, "the query ended before the server stopped"
    # no "database already exists", and no traces of the cancelled query
    assert " ERROR " not in Path(again.log.name).read_text()


def test_public_address_without_authentication_is_refused(own_manifest, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sql_dl.cli", "serve", "--manifest", str(own_manifest),
         "--host", "0.0.0.0", "--home", str(tmp_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert ("Error: refusing to listen on 0.0.0.0 (0.0.0.0), which is not a loopback address, "
            "without authentication") in result.stderr
    assert "pass --insecure to accept the risk" in result.stderr
    assert "ready:" not in result.stdout


def test_bind_check_accepts_loopback_authentication_or_insecure():
    from sql_dl.cli.server import ServerError, check_bind_address

    check_bind_address("127.0.0.1", {}, insecure=False)
    check_bind_address("localhost", {}, insecure=False)
    check_bind_address("0.0.0.0", {"hive.server2.authentication": "LDAP"}, insecure=False)
    check_bind_address("0.0.0.0", {}, insecure=True)
    with pytest.raises(ServerError, match=r"Received: --host 0.0.0.0, hive.server2.authentication=NOSASL"):
        check_bind_address("0.0.0.0", {"hive.server2.authentication": "nosasl"}, insecure=False)


@pytest.mark.parametrize("hive_conf, needs", [
    ({"hive.server2.authentication": "LDAP"},
     "--hiveconf hive.server2.authentication.ldap.url=... and --hiveconf "
     "hive.server2.authentication.ldap.baseDN (or .userDNPattern, or .Domain)=..."),
    ({"hive.server2.authentication": "ldap", "hive.server2.authentication.ldap.url": "ldap://h"},
     "--hiveconf hive.server2.authentication.ldap.baseDN (or .userDNPattern, or .Domain)=..."),
    ({"hive.server2.authentication": "CUSTOM"},
     "--hiveconf hive.server2.custom.authentication.class=..."),
    ({"hive.server2.authentication": "KERBEROS",
      "hive.server2.authentication.kerberos.principal": "hive/_HOST@REALM"},
     "--hiveconf hive.server2.authentication.kerberos.keytab=..."),
])
def test_an_authentication_mode_without_its_settings_is_refused(hive_conf, needs):
    from sql_dl.cli.server import ServerError, check_authentication

    mode = hive_conf["hive.server2.authentication"].upper()
    with pytest.raises(ServerError, match=re.escape(
            f"hive.server2.authentication={mode} needs {needs}. Received: ")):
        check_authentication({**hive_conf, "hive.server2.keystore.password": "pw-123"})
    with pytest.raises(ServerError) as raised:
        check_authentication({**hive_conf, "hive.server2.keystore.password": "pw-123"})
    assert "pw-123" not in str(raised.value) and "hive.server2.keystore.password=***" in str(
        raised.value)


def test_complete_authentication_settings_pass():
    from sql_dl.cli.server import check_authentication

    check_authentication({})
    check_authentication({"hive.server2.authentication": "NOSASL"})
    check_authentication({"hive.server2.authentication": "LDAP",
                          "hive.server2.authentication.ldap.url": "ldaps://h:636",
                          "hive.server2.authentication.ldap.userDNPattern": "uid=%s,dc=x"})


@pytest.mark.slow
def test_the_ui_on_loopback_a_private_cache_and_a_dead_jvm_ends_the_server(
        tmp_path, photos, photos_dir, cnn_file, labels_file):
    """With the Spark UI asked for, it listens on --host too; the prediction cache is under
    --home, private; with Spark's restricted mode off admins may run programs, analysts
    still may not; when the driver JVM dies, sql-dl serve exits non-zero within seconds."""
    env = {k: v for k, v in os.environ.items() if k != "SQL_DL_CACHE"}
    os.umask(umask := os.umask(0o022))  # the suite's, whatever it is: serve sets its own
    audit = tmp_path / "audit.jsonl"
    manifest = write_manifest(tmp_path / "admins.yaml", photos_dir, cnn_file, labels_file,
                              access={"admins": ["ops"]})
    server = Server(manifest, tmp_path / "home", "--conf", "spark.ui.enabled=true",
                    "--conf", "spark.ui.port=0", "--audit-log", str(audit),
                    "--conf", "spark.sql.restrictedMode.enabled=false", env=env)
    server.wait_ready()
    assert umask == os.umask(umask)
    jvm = server.jvm_pid()
    listening = listening_addresses(jvm)
    assert len(listening) >= 4 and {a for a, _ in listening} == {"127.0.0.1"}, listening
    assert rows_of(server, "SELECT count(cnn(image)) FROM photos") == [(len(photos),)]
    cache = tmp_path / "home" / "cache"
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert cache.stat().st_mode & 0o777 == 0o700 and files
    assert all(p.stat().st_mode & 0o077 == 0 for p in [*cache.rglob("*")]), files
    program = "SELECT TRANSFORM('x') USING 'cat' AS (o STRING)"
    assert rows_of(server, program) == [("x",)]  # ops, an admin
    with pytest.raises(OperationalError, match="AccessDenied: TRANSFORM runs programs"):
        rows_of(server, program, "alice")
    uuid = "SELECT length(reflect('java.util.UUID', 'randomUUID'))"
    assert rows_of(server, uuid) == [(36,)]  # on sql-dl serve's reflect allow list
    with pytest.raises(OperationalError, match="METHOD_NOT_ALLOWED"):  # not on it
        rows_of(server, "SELECT reflect('java.lang.System', 'getenv', 'HOME')")
    with pytest.raises(OperationalError, match="AccessDenied: reflect"):
        rows_of(server, uuid, "alice")

    from pyhive import hive

    running = hive.connect(host="127.0.0.1", port=server.port, username="alice").cursor()
    running.execute(SLOW.format(n=300_000_000), async_=True)
    time.sleep(2)
    os.kill(jvm, signal.SIGKILL)  # as an out-of-memory would end it
    started = time.monotonic()
    code = server.process.wait(timeout=30)
    assert (code, time.monotonic() - started < 10) == (3, True)
    assert "The Spark driver JVM ended" in Path(server.log.name).read_text()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {"user": "alice", "statement": SLOW.format(n=300_000_000), "outcome": "started"} in [
        {k: line[k] for k in ("user", "statement", "outcome")} for line in lines]


def rows_of(server: Server, sql: str, user: str = "ops") -> list[tuple]:
    from pyhive import hive

    return answer(hive.connect(host="127.0.0.1", port=server.port, username=user), sql)


def timed(server: Server, sql: str, user: str) -> tuple[float, list[tuple]]:
    started = time.monotonic()
    result = rows_of(server, sql, user)
    return time.monotonic() - started, result


@pytest.mark.slow
def test_one_users_heavy_or_memory_exhausting_query_does_not_stop_another(own_manifest,
                                                                          tmp_path, photos):
    """sql-dl serve's default master runs the executors in a JVM of their own, and each user's
    statements in a FAIR pool of their own."""
    from pyhive import hive
    from TCLIService.ttypes import TOperationState

    server = Server(own_manifest, tmp_path / "home", master=None)
    server.wait_ready()
    try:
        count = "SELECT count(*) FROM photos"
        idle = min(timed(server, count, "bob")[0] for _ in range(3))
        heavy = hive.connect(host="127.0.0.1", port=server.port, username="alice").cursor()
        heavy.execute(SLOW.format(n=300_000_000).replace("1, 2)", "1, 300)"), async_=True)
        time.sleep(3)  # about 90 s of work in 300 tasks
        busy = [timed(server, count, "bob") for _ in range(3)]
        assert [rows for _, rows in busy] == [[(len(photos),)]] * 3
        # still running: bob did not wait for it to end
        assert heavy.poll().operationState == TOperationState.RUNNING_STATE
        heavy.cancel()
        print(f"bob's count(*): {idle:.2f} s idle, {max(t for t, _ in busy):.2f} s at most "
              "during alice's heavy query")
        assert max(t for t, _ in busy) < 20

        # a statement that exhausts the executor's memory fails; the server and bob go on
        from pyhive.exc import OperationalError

        failed = {}

        def exhaust():
            with pytest.raises(OperationalError) as raised:
                rows_of(server, "SELECT size(collect_list(image)) FROM photos "
                                "CROSS JOIN range(20000)", "alice")
            failed["error"] = raised.value.args[0].status.errorMessage

        thread = threading.Thread(target=exhaust)
        thread.start()
        time.sleep(5)
        during = timed(server, count, "bob")
        thread.join(timeout=300)
        assert "failed 2 times" in failed["error"] and "OutOfMemoryError" in failed["error"]
        assert during[1] == [(len(photos),)]
        print(f"bob's count(*) during alice's memory-exhausting query: {during[0]:.1f} s")
        assert server.process.poll() is None
        assert rows_of(server, count, "bob") == [(len(photos),)]
    finally:
        code, _ = server.stop()
    assert code == 0


@pytest.mark.slow
def test_http_transport_and_query_timeout(own_manifest, tmp_path, cnn_file, photos):
    server = Server(own_manifest, tmp_path / "home", "--hiveconf", "hive.server2.transport.mode=http",
                    "--conf", "spark.sql.thriftServer.queryTimeout=12s")
    try:
        url = server.wait_ready()
        assert url == f"jdbc:hive2://127.0.0.1:{server.port}/;transportMode=http;httpPath=cliservice"
        result = beeline(url, "SELECT path, cnn_top_k(image, 1)[0].description FROM photos ORDER BY path")
        assert result.returncode == 0, result.stderr
        assert [best for _, best in result.rows] == expected_best(cnn_file, [local(p) for p, _ in result.rows])

        started = time.monotonic()
        slow = beeline(url, SLOW.format(n=200_000_000))  # 30 s of work per core
        assert slow.returncode != 0
        assert "Error: Query timed out after" in slow.stderr
        assert time.monotonic() - started < 25
    finally:
        code, _ = server.stop()
    assert code == 0
