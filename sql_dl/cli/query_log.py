"""``sql-dl serve``'s query log: each statement with its user, what it did when it ends, and
with ``--audit-log`` its audit line (`sql_dl.cli.audit`) when its client closes it."""

from __future__ import annotations

import logging
import threading

from sql_dl.cli.audit import AuditLog, Redactor
from sql_dl.driver.counts import counts, statement_counts
from sql_dl.errors import SparkInternalsError
from sql_dl.rules import IMAGE_ERROR_FUNCTION
from sql_dl.spark import internals as spark_internals

__all__ = ["QueryLog"]

logger = logging.getLogger(__name__)


class QueryLog(threading.Thread):
    """Logs each statement the server runs with the name of the user who sent it, and when
    it ends, what it did since the previous query ended: images scored and answered from the
    prediction cache, images that could not be decoded, image files deleted after listing.
    With an `AuditLog`, writes its line for each statement its client closed.

    Reads the Thrift Server's own records of executions (as its UI does) once a second, in
    the order statements started. Image counts are each statement's own (kept by its id);
    files skipped are counted since the previous statement ended, so concurrent statements
    share them. Statements are logged through ``redact``.
    """

    AUDIT_WAIT = 10  # polls a closed statement waits for Spark's record of its end

    def __init__(self, spark, redact: Redactor, audit: AuditLog | None = None,
                 interval: float = 1.0, on_finish=None):
        super().__init__(name="sql_dl-query-log", daemon=True)
        self.spark = spark
        self.redact = redact
        self.audit = audit
        self.on_finish = on_finish
        self.interval = interval
        self.stopped = threading.Event()
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.closing: list[tuple[spark_internals.ClosedStatement, int]] = []
        self.skipped = counts(spark).skipped

    @classmethod
    def start_if_possible(cls, spark, redact: Redactor, audit: AuditLog | None = None,
                          on_finish=None) -> QueryLog | None:
        """Starts the log, or says once why there is none (the server serves either way,
        unless it has an audit log). ``on_finish()`` is called after each statement ends.

        Raises:
            SparkInternalsError: with ``audit``, when Spark's records of statements cannot
                be read.
        """
        try:
            spark_internals.thrift_server_executions(spark)
        except SparkInternalsError as e:
            if audit is not None:
                raise
            logger.warning("No query log: %s", e)
            return None
        log = cls(spark, redact, audit, on_finish=on_finish)
        log.start()
        return log

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        """Stops polling; then writes the audit lines of every statement, open ones too."""
        self.stopped.set()
        self.join(timeout=60)
        self.poll(final=True)
        if self.audit is not None:
            self.audit.close()

    def poll(self, final: bool = False) -> None:
        for login in spark_internals.refused_logins(self.spark):
            logger.warning("login refused for user %r from %s: %s", login.user,
                           login.client or "an unknown address", login.why)
            if self.audit is not None:
                self.audit.write_login_failed(login)
        executions = sorted(spark_internals.thrift_server_executions(self.spark),
                            key=lambda e: e.started)
        for execution in executions:
            if execution.id not in self.started:
                self.started.add(execution.id)
                logger.info("query %s by user %s: %s", execution.id, execution.user,
                            self.redact(" ".join(execution.statement.split())))
            if execution.id not in self.finished and execution.finished:
                self.finished.add(execution.id)
                self._log_finish(execution)
        listed = {e.id: e for e in executions}
        self.started &= listed.keys()  # Spark keeps the latest statements' records only
        self.finished &= listed.keys()
        if self.audit is not None:
            self._audit(listed, final)

    def _log_finish(self, execution: spark_internals.Execution) -> None:
        skipped = counts(self.spark).skipped
        done = statement_counts(self.spark, execution.id)._replace(
            skipped=skipped - self.skipped)
        for line in done.messages(IMAGE_ERROR_FUNCTION):
            warning = line.startswith("Warning: ")
            logger.log(logging.WARNING if warning else logging.INFO, "query %s: %s",
                       execution.id, line.removeprefix("Warning: "))
        self.skipped = skipped
        if self.on_finish is not None:
            self.on_finish()

    def _audit(self, executions: dict[str, spark_internals.Execution], final: bool) -> None:
        closed = spark_internals.closed_statements(self.spark, and_open=final)
        waiting = []
        for statement, polls in self.closing + [(s, 0) for s in closed]:
            execution = executions.get(statement.id)
            if final or polls >= self.AUDIT_WAIT or (execution and execution.finished):
                error = statement.error or (execution.error if execution else None)
                redacted = statement._replace(statement=self.redact(statement.statement),
                                              error=self.redact(error) or None)
                self.audit.write(redacted, execution, statement_counts(self.spark, statement.id))
            else:
                waiting.append((statement, polls + 1))
        self.closing = waiting
