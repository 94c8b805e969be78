"""The ``sql-dl sql`` shell: runs SQL scripts and an interactive prompt, spark-sql style."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, TextIO

from sql_dl.driver.counts import counts
from sql_dl.driver.session import show_progress_bar
from sql_dl.errors import SqlDlError
from sql_dl.rules import IMAGE_ERROR_FUNCTION, IMAGE_INFO_FUNCTION
from sql_dl.spark import internals as spark_internals
from sql_dl.sql_text import split_statements

__all__ = ["SqlShell", "binary_placeholders"]

HISTORY_FILE = Path.home() / ".sql_dl_history"
PROMPT = "sql-dl> "
CONTINUATION = "      > "
_EXIT_STATEMENTS = ("quit", "exit")


class SqlShell:
    """Runs statements against a session and prints results as tab-separated lines.

    Results are formatted by Spark's own ``HiveResult``, exactly as ``spark-sql`` prints them,
    except ``BINARY`` columns: a short placeholder per value (`binary_placeholders`) unless
    ``raw_binary``.
    An error is one message; the first also names ``details``, the file of Spark's log.
    ``after_statement()`` is called after each statement.
    """

    def __init__(self, spark, header: bool = False, silent: bool = False, echo: bool = False,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                 details: Path | None = None, after_statement=None, raw_binary: bool = False):
        self.spark = spark
        self.raw_binary = raw_binary
        self.after_statement = after_statement
        self.details = details
        self.header = header
        self.echo = echo
        self.silent = silent
        self.out = out
        self.err = err

    def run_script(self, text: str, print_results: bool = True) -> bool:
        """Runs every statement of ``text``; stops at the first error and returns False."""
        return all(self.run(statement, print_results) for statement in split_statements(text))

    def run(self, statement: str, print_results: bool = True) -> bool:
        """Runs one statement, printing its result; returns False (and reports) on error."""
        from pyspark.errors import PySparkException

        if self.echo:
            print(f"\n{PROMPT}{statement};", file=self.out, flush=True)
        started = time.monotonic()
        before = counts(self.spark)
        cancelled = threading.Event()
        interrupts = _CtrlC(self.spark, cancelled)
        try:
            with interrupts:
                frame = self.spark.sql(statement)
                shown = frame if self.raw_binary else binary_placeholders(frame)
                lines = spark_internals.hive_result_lines(shown)
        except Exception as e:  # a cancelled job fails with Spark's (raw) SparkException
            if not (cancelled.is_set() or isinstance(e, (PySparkException, SqlDlError))):
                raise
            self._finish_progress_bar()
            if cancelled.is_set():
                print("Query cancelled", file=self.err)
                return False
            print(f"Error: {_error_message(e)}", file=self.err)
            if self.details is not None:
                print(f"(Spark's log, with the details of errors: {self.details})", file=self.err)
                self.details = None
            return False
        finally:
            for line in (counts(self.spark) - before).messages(IMAGE_ERROR_FUNCTION):
                if line.startswith("Warning: ") or not self.silent:
                    print(line, file=self.err)
            if self.after_statement is not None:
                self.after_statement()
        self._finish_progress_bar()
        if print_results:
            if self.header and frame.columns:
                print("\t".join(frame.columns), file=self.out)
            for line in lines:
                print(line, file=self.out)
            self.out.flush()
        if not self.silent:
            print(f"Time taken: {time.monotonic() - started:.3f} seconds, "
                  f"Fetched {len(lines)} row(s)", file=self.err)
        return True

    def _finish_progress_bar(self) -> None:
        """Erases Spark's progress bar before the next line (a result, an error or the
        prompt), so that a late refresh of it does not erase that line."""
        if self.err.isatty():
            spark_internals.finish_progress_bar(self.spark)
            self.err.write("\r\x1b[K")
            self.err.flush()

    def interact(self, lines: Iterable[str] | None = None) -> None:
        """Reads ``;``-terminated statements at a prompt, with history, until quit or EOF."""
        readline = _readline()
        buffer: list[str] = []  # the statement being typed
        try:
            self._read_statements(lines if lines is not None else _prompt_lines(buffer), buffer)
        finally:
            if readline is not None:
                readline.write_history_file(HISTORY_FILE)

    def _read_statements(self, lines: Iterable[str], buffer: list[str]) -> None:
        for line in lines:
            buffer.append(line)
            if not line.rstrip().endswith(";"):
                continue
            text, buffer[:] = "\n".join(buffer), []
            for statement in split_statements(text):
                if statement.lower() in _EXIT_STATEMENTS:
                    return
                self.run(statement)


def binary_placeholders(frame):
    """``frame`` with each top-level ``BINARY`` value shown as ``<PNG 32×32, 1.2 kB>`` (an
    image, from its header) or ``<binary 1,234 bytes>``; NULL stays NULL. Other frames are
    returned as they are (so ``DESCRIBE`` and ``SHOW`` keep Spark's own formatting)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BinaryType

    fields = frame.schema.fields
    if not any(isinstance(f.dataType, BinaryType) for f in fields):
        return frame
    spark = frame.sparkSession
    has_info = spark.catalog.functionExists(IMAGE_INFO_FUNCTION)
    renamed = frame.toDF(*(f"_c{i}" for i in range(len(fields))))  # names may repeat
    columns = []
    for i, field in enumerate(fields):
        value = F.col(f"_c{i}")
        if not isinstance(field.dataType, BinaryType):
            columns.append(value)
            continue
        size = F.length(value)
        bytes_ = F.concat(F.format_number(size, 0), F.lit(" bytes"))
        human = (F.when(size < 1000, bytes_)
                 .when(size < 1000 ** 2, F.concat(F.format_number(size / 1000, 1), F.lit(" kB")))
                 .otherwise(F.concat(F.format_number(size / 1000 ** 2, 1), F.lit(" MB"))))
        described = F.concat(F.lit("<binary "), bytes_, F.lit(">"))
        if has_info:
            info = F.call_function(IMAGE_INFO_FUNCTION, value)
            described = F.coalesce(
                F.concat(F.lit("<"), info.format, F.lit(" "), info.width, F.lit("×"),
                         info.height, F.lit(", "), human, F.lit(">")), described)
        columns.append(F.when(value.isNotNull(), described))
    return renamed.select(*columns)


class _CtrlC:
    """Ctrl-C while a statement runs cancels its Spark jobs, from a thread of its own, and
    the statement then fails (`SqlShell.run` says ``Query cancelled``). PySpark's own handler
    would raise KeyboardInterrupt inside the main thread's Py4J call, whose connection is
    then half-read (and Py4J logs tracebacks). Only in the main thread, where signals go."""

    def __init__(self, spark, cancelled: threading.Event):
        self.spark = spark
        self.cancelled = cancelled
        self.previous = None

    def _interrupted(self, signum, frame) -> None:
        self.cancelled.set()
        threading.Thread(target=self.spark.sparkContext.cancelAllJobs, name="sql_dl-cancel",
                         daemon=True).start()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _prompt_lines(buffer: list[str]) -> Iterable[str]:
    while True:
        try:
            show_progress_bar(False)  # a background job's bar would erase the prompt
            try:
                line = input(CONTINUATION if buffer else PROMPT)
            finally:
                show_progress_bar(True)
            yield line
        except EOFError:
            print(file=sys.stdout)
            return
        except KeyboardInterrupt:  # Ctrl-C drops the statement being typed, as spark-sql does
            print(file=sys.stdout)
            buffer.clear()


def _readline():
    try:
        import readline
    except ImportError:  # not on every platform
        return None
    if HISTORY_FILE.exists():
        readline.read_history_file(HISTORY_FILE)
    readline.set_history_length(1000)
    return readline


def _error_message(error: Exception) -> str:
    """The message a user needs: for a worker's error, its exception line, not the
    traceback; for an analysis or parse error, its first line and the statement with a
    caret under the culprit."""
    from pyspark.errors import PySparkException, PythonException

    lines = [line for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if isinstance(error, PythonException):
        ours = [line for line in lines if line.startswith("sql_dl.errors.")]
        return ours[-1].removeprefix("sql_dl.errors.") if ours else lines[-1]
    message = [lines[0]]
    contexts = error.getQueryContext() if isinstance(error, PySparkException) else []
    sql = [c for c in contexts if c.contextType().name == "SQL"]
    if sql:  # an analysis error: Spark's own summary of where it is
        message += [line for line in sql[0].summary().splitlines() if line.strip()]
    elif any(line.startswith("== SQL") for line in lines):  # a parse error: its caret block
        start = next(i for i, line in enumerate(lines) if line.startswith("== SQL"))
        for line in lines[start:]:
            message.append(line)
            if set(line.strip()) <= {"-", "^"}:
                break
    return "\n".join(message)
