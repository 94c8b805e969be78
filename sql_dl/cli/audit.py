"""``sql-dl serve --audit-log FILE``: who ran what, as one JSON line per statement.

Each line is written when the client closes the statement (then the rows it fetched are
known), or as the server stops for statements still open. The file is rotated by size, as
``logging.handlers.RotatingFileHandler`` does (``FILE.1`` is the newest old file). Secrets
never reach it, nor the server's query log: see `Redactor`.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import re
import threading
from pathlib import Path
from typing import Iterable

from sql_dl.driver.counts import Counts
from sql_dl.errors import ConfigurationError
from sql_dl.spark import internals as spark_internals
from sql_dl.spark.internals import ClosedStatement, Execution, RefusedLogin, StartedStatement

__all__ = ["AuditLog", "Redactor", "SECRET_KEY", "StartLines", "parse_size"]

REDACTED = "*********(redacted)"  # Spark's own mark for a redacted value
_SECRET_WORDS = (r"secret|password|passwd|pwd|token|credential"
                 r"|(?:access|account|private)[._-]?key")
SECRET_KEY = re.compile(f"(?i){_SECRET_WORDS}")  # a setting whose value is a secret
_KEY = rf"[\w.\-]*(?:{_SECRET_WORDS})[\w.\-]*"
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
# a secret-looking key, then its value: quoted after a blank, "=" or ":" (OPTIONS (password
# 'x'), 'password' = 'x'), or unquoted after "=" or ":" (SET k=x, ...;password=x;...)
_PAIR = re.compile(rf"(?i)({_KEY}['\"`]?\s*(?:[=:]\s*)?)(?:{_QUOTED})"
                   rf"|({_KEY}['\"`]?\s*[=:]\s*)[^\s'\";&,)]+")
_OUTCOMES = {"FINISHED": "success", "ERROR": "error", "CANCELED": "cancelled",
             "TIMEDOUT": "timed_out"}  # else "unfinished": running as the server stopped
_SIZE = re.compile(r"(?i)^\s*(\d+)\s*([kmg]?)i?b?\s*$")
_DENIED = re.compile(r"\bAccessDenied: (.*?)(?:\. Received: .*)?$")  # the policy's refusal
_ERROR_CHARS = 2000  # of an error's first line (Spark's analysis errors add the plan)

logger = logging.getLogger(__name__)


class Redactor:
    """Replaces secrets in text with ``*********(redacted)``: every occurrence of the
    ``secrets`` given (the server's own passwords), the value of every secret-looking key
    (``SET fs.s3a.secret.key=...``, ``OPTIONS (password '...')``, ``...;password=...`` in
    a URL), and every match of ``pattern`` (Spark's ``spark.sql.redaction.string.regex``).
    """

    def __init__(self, secrets: Iterable[str] = (), pattern: str | None = None):
        self.secrets = sorted({s for s in secrets if s and s.lower() not in ("true", "false")},
                              key=len, reverse=True)
        try:
            self.pattern = re.compile(pattern) if pattern else None
        except re.error as e:
            raise ConfigurationError(
                f"spark.sql.redaction.string.regex is not a regular expression "
                f"Python can apply: {e}. Received: {pattern!r}") from e

    @classmethod
    def for_settings(cls, settings: dict[str, str], pattern: str | None = None) -> Redactor:
        """The values of the settings whose keys look secret, as Spark's
        ``spark.redaction.regex`` judges keys."""
        return cls((v for k, v in settings.items() if SECRET_KEY.search(k)), pattern)

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _PAIR.sub(_redact_pair, text)
        return self.pattern.sub(REDACTED, text) if self.pattern else text


def _utc(epoch_ms: int) -> str:
    return (datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _redact_pair(match: re.Match) -> str:
    if match.group(1) is not None:
        return f"{match.group(1)}'{REDACTED}'"
    return f"{match.group(2)}{REDACTED}"


def parse_size(text: str) -> int:
    """Bytes from ``"100MB"``, ``"512k"``, ``"1g"`` or ``"4096"`` (powers of 1024).

    Raises:
        ValueError: naming the accepted forms.
    """
    match = _SIZE.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"a size is a positive number of bytes, optionally with k, M or G "
                         f"(1024-based): 4096, 512k, 100MB. Received: {text!r}")
    return int(match.group(1)) * 1024 ** " kmg".index((match.group(2) or " ").lower())


class AuditLog:
    """Appends one JSON line per statement to ``path``, rotated at ``max_bytes`` with
    ``backups`` old files kept; others than the owner and the group cannot read them."""

    def __init__(self, path: str | os.PathLike, max_bytes: int, backups: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = _PrivateRotatingFile(self.path, maxBytes=max_bytes, backupCount=backups,
                                            encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, statement: ClosedStatement, execution: Execution | None,
              done: Counts) -> None:
        """One line for a closed statement (its text and error already redacted), with
        Spark's record of it when there is one (start and end times) and what sql_dl's
        functions did for it."""
        started = execution.started if execution is not None else statement.created
        finished = execution.finished_at if execution is not None else 0
        outcome = _OUTCOMES.get(statement.outcome, "unfinished")
        error = statement.error.strip().splitlines()[0] if statement.error else None
        denied = _DENIED.search(error) if error and outcome == "error" else None
        if denied:
            outcome, error = "denied", error[denied.start():]
        line = {
            "time": _utc(started),
            "user": statement.user,
            "client": statement.client,
            "statement": statement.statement,
            "duration_ms": finished - started if finished else None,
            "rows": statement.rows,
            "images_scored": done.scored,
            "images_from_cache": done.cached,
            "outcome": outcome,
            "error": error[:_ERROR_CHARS] if error and outcome != "success" else None,
            "rule": denied.group(1) if denied else None,
            "statement_id": statement.id,
        }
        self._append(line)

    def write_started(self, statement: StartedStatement) -> None:
        """The line of a statement about to run (its text already redacted)."""
        self._append({"time": _utc(statement.at), "user": statement.user,
                      "client": statement.client, "statement": statement.statement,
                      "duration_ms": None, "rows": None, "images_scored": None,
                      "images_from_cache": None, "outcome": "started", "error": None,
                      "rule": None, "statement_id": statement.id})

    def write_login_failed(self, login: RefusedLogin) -> None:
        """The line of a refused login: the user as typed, the client's address, why."""
        self._append({"time": _utc(login.at), "user": login.user, "client": login.client,
                      "statement": None, "duration_ms": None, "rows": None,
                      "images_scored": None, "images_from_cache": None,
                      "outcome": "login_failed", "error": login.why, "rule": None,
                      "statement_id": None})

    def _append(self, line: dict) -> None:
        record = logging.LogRecord("sql_dl.audit", logging.INFO, "", 0,
                                   json.dumps(line, ensure_ascii=False), None, None)
        self.handler.handle(record)

    def close(self) -> None:
        self.handler.close()


class StartLines(threading.Thread):
    """Writes each statement's ``started`` line before the statement runs: the Thrift Server
    holds it (up to two seconds) until its line is written, so a statement that ends the
    process has left its line."""

    def __init__(self, spark, audit: AuditLog, redact: Redactor):
        super().__init__(name="sql_dl-audit-started", daemon=True)
        self.spark, self.audit, self.redact = spark, audit, redact
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                started = spark_internals.next_started_statement(self.spark, timeout=0.5)
            except Exception as e:  # noqa: BLE001 - the JVM stopped: so does this thread
                if not self.stopped.is_set():
                    logger.warning("audit: no more started lines: %s", str(e).splitlines()[0])
                return
            if started is not None:
                self.audit.write_started(started._replace(
                    statement=self.redact(started.statement)))
                spark_internals.started_statement_written(self.spark, started.id)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """Creates each file with no access for others (mode 0640), and opens the file again
    when it was moved or deleted (by logrotate, or by hand), as ``WatchedFileHandler``
    does."""

    def emit(self, record) -> None:
        if self.stream is not None:
            try:
                now = os.stat(self.baseFilename)
            except FileNotFoundError:
                now = None
            opened = os.fstat(self.stream.fileno())
            if now is None or (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
                self.stream.close()
                self.stream = self._open()
        super().emit(record)

    def _open(self):
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        if os.fstat(descriptor).st_size == 0:  # new: 0640 whatever the umask (serve's is 077)
            os.fchmod(descriptor, 0o640)
        return open(descriptor, "a", encoding=self.encoding, errors=self.errors)
