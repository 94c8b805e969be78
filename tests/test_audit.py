"""The audit log's redaction, size parsing and lines, without Spark (tests/test_ldap.py
checks them end to end through sql-dl serve)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sql_dl.cli.audit import REDACTED, AuditLog, Redactor, parse_size
from sql_dl.driver.counts import Counts
from sql_dl.spark.internals import ClosedStatement, Execution, StartedStatement


@pytest.mark.parametrize("text, expected", [
    ("SET spark.hadoop.fs.s3a.secret.key=AKIA123",
     f"SET spark.hadoop.fs.s3a.secret.key={REDACTED}"),
    ("SET spark.hadoop.fs.s3a.access.key = AKIA123",
     f"SET spark.hadoop.fs.s3a.access.key = {REDACTED}"),
    ("OPTIONS (user 'u', password 'p w\\'x', dbtable 't')",
     f"OPTIONS (user 'u', password '{REDACTED}', dbtable 't')"),
    ("OPTIONS ('fs.azure.account.key.a.blob.core.windows.net' = \"k\")",
     f"OPTIONS ('fs.azure.account.key.a.blob.core.windows.net' = '{REDACTED}')"),
    ("url 'jdbc:postgresql://h/db?user=u&password=hunter2&ssl=true'",
     f"url 'jdbc:postgresql://h/db?user=u&password={REDACTED}&ssl=true'"),
    ("jdbc:sqlserver://h;user=u;password=hunter2;encrypt=true",
     f"jdbc:sqlserver://h;user=u;password={REDACTED};encrypt=true"),
    ("SELECT password, token FROM users", "SELECT password, token FROM users"),  # no values
    ("SELECT path FROM photos", "SELECT path FROM photos"),
])
def test_secret_looking_values_are_redacted(text, expected):
    assert Redactor()(text) == expected


def test_known_secrets_and_spark_redaction_pattern_are_redacted_anywhere():
    redact = Redactor.for_settings(
        {"spark.hadoop.hive.server2.keystore.password": "store-pass-1",
         "spark.ssl.enabled": "true", "spark.app.name": "sql-dl"},
        pattern=r"(?i)card=\d+")
    assert redact.secrets == ["store-pass-1"]  # a boolean is no secret
    assert redact("SELECT 'store-pass-1' AS x, 'card=1234' AS y, 'sql-dl' AS z") == (
        f"SELECT '{REDACTED}' AS x, '{REDACTED}' AS y, 'sql-dl' AS z")
    assert redact(None) is None


def test_a_pattern_python_cannot_apply_is_refused():
    with pytest.raises(ValueError, match=r"spark\.sql\.redaction\.string\.regex is not a regular "
                                         r"expression Python can apply: .*Received: '\(\?<x'"):
        Redactor(pattern="(?<x")


@pytest.mark.parametrize("text, size", [("4096", 4096), ("2k", 2048), ("100MB", 100 * 1024 ** 2),
                                        ("1 GiB", 1024 ** 3), ("512kb", 512 * 1024)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["0", "-1k", "1.5M", "ten", "5T"])
def test_bad_sizes_are_refused_naming_the_forms(text):
    with pytest.raises(ValueError, match=rf"4096, 512k, 100MB\. Received: {text!r}"):
        parse_size(text)


def test_cli_refuses_a_bad_audit_log_size(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sql_dl.cli", "serve", "--manifest", "m.yaml",
                             "--audit-log", str(tmp_path / "a.jsonl"), "--audit-log-max-size",
                             "lots"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: sql-dl serve: argument --audit-log-max-size: a size "
                                    "is a positive number of bytes")
    assert not (tmp_path / "a.jsonl").exists()


def closed(n: int, outcome: str = "FINISHED", error: str | None = None) -> ClosedStatement:
    return ClosedStatement(f"id-{n}", "alice", "10.0.0.7", f"SELECT {n} AS padding_{'x' * 80}",
                           1_764_000_000_000 + n, n, outcome, error)


def test_lines_rotation_and_file_mode(tmp_path):
    log = AuditLog(tmp_path / "logs" / "audit.jsonl", max_bytes=1024, backups=3)
    execution = Execution("id-0", "alice", "SELECT 0", 1_764_000_000_000, 1_764_000_001_250, "")
    log.write(closed(0), execution, Counts(scored=5, cached=2))
    for n in range(1, 20):
        log.write(closed(n, "RUNNING"), None, Counts())
    log.write(closed(20, "ERROR", "[X] it failed\n'Project [plan]"), None, Counts())
    log.close()
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2",
                                       "audit.jsonl.3"]
    assert all(f.stat().st_size <= 1024 and f.stat().st_mode & 0o777 == 0o640 for f in files)
    lines = [json.loads(line) for f in reversed(files) for line in f.read_text().splitlines()]
    kept = range(21 - len(lines), 21)  # the newest lines, in order
    assert [line["statement_id"] for line in lines] == [f"id-{n}" for n in kept]
    assert lines[-1] == {
        "time": "2025-11-24T16:00:00.020Z", "user": "alice", "client": "10.0.0.7",
        "statement": closed(20).statement, "duration_ms": None, "rows": 20, "images_scored": 0,
        "images_from_cache": 0, "outcome": "error", "error": "[X] it failed", "rule": None,
        "statement_id": "id-20"}
    assert {line["outcome"] for line in lines[:-1]} == {"unfinished"}


def test_a_line_from_sparks_record(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=10_000, backups=1)
    execution = Execution("id-0", "alice", "SELECT 0", 1_764_000_000_000, 1_764_000_001_250, "")
    log.write(closed(0), execution, Counts(scored=5, cached=2))
    log.close()
    line = json.loads((tmp_path / "audit.jsonl").read_text())
    assert (line["time"], line["duration_ms"], line["images_scored"], line["images_from_cache"],
            line["outcome"], line["error"]) == ("2025-11-24T16:00:00.000Z", 1250, 5, 2, "success",
                                                None)


def test_a_refused_statement_is_denied_with_its_rule(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=10_000, backups=1)
    refusal = ("AccessDenied: TRANSFORM runs programs on the server; only admins may. "
               "Received: user=alice")
    log.write(closed(0, "ERROR", f"Error running query: {refusal}"), None, Counts())
    log.write(closed(1, "ERROR", refusal), None, Counts())  # Spark's record has no prefix
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(line["outcome"], line["error"], line["rule"]) for line in lines] == [
        ("denied", refusal, "TRANSFORM runs programs on the server; only admins may")] * 2


def test_started_lines_and_a_moved_file_opened_again(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=10_000, backups=1)
    log.write_started(StartedStatement("id-0", "alice", "10.0.0.7", "SELECT 0", 1_764_000_000_000))
    path.rename(tmp_path / "moved.jsonl")  # logrotate's create mode, or a mistake
    log.write(closed(0), None, Counts())
    path.unlink()
    log.write(closed(1), None, Counts())
    log.close()
    moved = [json.loads(line) for line in (tmp_path / "moved.jsonl").read_text().splitlines()]
    assert moved == [{
        "time": "2025-11-24T16:00:00.000Z", "user": "alice", "client": "10.0.0.7",
        "statement": "SELECT 0", "duration_ms": None, "rows": None, "images_scored": None,
        "images_from_cache": None, "outcome": "started", "error": None, "rule": None,
        "statement_id": "id-0"}]
    assert [json.loads(line)["statement_id"] for line in path.read_text().splitlines()] == [
        "id-1"]  # after the move a new file; deleted, another
    assert path.stat().st_mode & 0o777 == 0o640


def test_every_end_of_a_statement_has_its_outcome(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=10_000, backups=1)
    for n, state in enumerate(("FINISHED", "ERROR", "CANCELED", "TIMEDOUT", "RUNNING")):
        log.write(closed(n, state, "[X] it failed" if state == "ERROR" else None), None,
                  Counts())
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["outcome"] for line in lines] == [
        "success", "error", "cancelled", "timed_out", "unfinished"]
