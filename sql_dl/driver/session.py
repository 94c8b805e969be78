"""``session``: a SparkSession configured for sql_dl, then bootstrapped from a manifest."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from sql_dl.driver import keep_warm as keeping_warm
from sql_dl.driver.registration import bootstrap
from sql_dl.errors import ConfigurationError, SparkInternalsError
from sql_dl.paths import SOURCE_CONF_DIR, home_dir
from sql_dl.spark.extension import extension_conf
from sql_dl.spark.internals import launch_gateway

__all__ = ["DEFAULT_CONF", "check_home_free", "session", "show_progress_bar"]

# Applied under the caller's own conf, which wins.
DEFAULT_CONF: dict[str, str] = {
    "spark.app.name": "sql_dl",
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.catalogImplementation": "hive",
    # TensorFlow's C++ INFO lines (CPU features, …) stay out of the workers' stderr.
    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "1",
}

logger = logging.getLogger(__name__)

_LOCAL_MASTER = re.compile(r"^local(?:\[(\*|\d+)\])?$")
# Attempts per task on local masters, as spark.task.maxFailures gives on clusters.
LOCAL_TASK_ATTEMPTS = 4
# Seconds a new session waits for another process to close the metastore of its home.
HOME_RELEASE_WAIT = 15.0


def with_retries(master: str) -> str:
    """``local`` and ``local[N]`` as ``local[N,4]``: a task whose Python worker dies is
    retried, as on a cluster (Spark's local mode otherwise fails the query at once)."""
    match = _LOCAL_MASTER.match(master)
    return f"local[{match.group(1) or 1},{LOCAL_TASK_ATTEMPTS}]" if match else master


def session(manifest: str | os.PathLike | Mapping[str, Any] | None = None,
            master: str | None = None, *,
            conf: Mapping[str, str] | None = None,
            home: str | os.PathLike | None = None, warm_up: bool = True,
            keep_warm: bool = False, jvm_log: str | os.PathLike | None = None):
    """Builds (or gets) a SparkSession configured for sql_dl and bootstraps ``manifest``.

    The session runs Python workers with this interpreter, reuses them (so models stay
    loaded), sizes Arrow batches for images, keeps a Hive metastore (embedded Derby) and
    warehouse under ``home``, and runs sql_dl's Spark extension (`sql_dl.spark.extension`:
    ``ORDER BY … LIMIT n`` scores only the n rows returned). When ``SPARK_CONF_DIR`` is
    unset and the source checkout's ``conf/`` exists, Spark reads its
    ``spark-defaults.conf`` and ``log4j2.properties`` from there.

    Args:
        manifest: a manifest path or dict to bootstrap, or None for none.
        master: the Spark master, e.g. ``local[4]`` or ``spark://host:7077``; default
            ``local[*]`` unless the conf or the environment (``MASTER``) sets one. Local
            masters get task retries: ``local[4]`` runs as ``local[4,4]``.
        conf: extra Spark settings; they override sql_dl's defaults.
        home: directory of the metastore and warehouse; default ``$SQL_DL_HOME`` or
            ``~/.sql_dl``.
        warm_up: load the manifest's models in a Python worker per core now, so that the
            first query runs warm (see `bootstrap`); on by default here.
        keep_warm: keep the Python workers, and so the loaded models, alive through idle
            time (Spark stops idle workers after a minute), and load the models again in
            workers that replace killed ones (see `sql_dl.driver.keep_warm`). For notebooks where
            minutes pass between queries.
        jvm_log: a file for the driver JVM's stderr (Spark's log, the Python workers'
            stderr, executor errors) instead of the terminal; Spark's progress bar still
            goes to the terminal. The previous file is kept with the suffix ``.1``. Only
            when this call starts the JVM.

    Returns:
        The SparkSession.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    home = home_dir(home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if "SPARK_CONF_DIR" not in os.environ and SOURCE_CONF_DIR.is_dir():
        os.environ["SPARK_CONF_DIR"] = str(SOURCE_CONF_DIR)
    java_options = [f"-Dderby.system.home={home}"]
    if os.environ.get("TMPDIR"):  # the JVM's temporary files go where Python's go
        java_options.append(f"-Djava.io.tmpdir={os.environ['TMPDIR']}")
    settings = {
        **DEFAULT_CONF,
        "spark.pyspark.python": os.environ["PYSPARK_PYTHON"],
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        **(conf or {}),
    }
    settings.update(extension_conf(settings))  # top-N before model functions (jvm/)
    settings["spark.driver.extraJavaOptions"] = " ".join(
        java_options + [(conf or {}).get("spark.driver.extraJavaOptions", "")]).strip()
    master = master or settings.pop("spark.master", None) or os.environ.get("MASTER") or "local[*]"
    settings["spark.master"] = with_retries(master)
    if SparkContext._active_spark_context is None:  # this call starts Spark
        check_home_free(home)
    if jvm_log is not None and SparkSession.getActiveSession() is None:
        _start_logging_jvm(settings, Path(jvm_log))
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    if manifest is not None:
        bootstrap(spark, manifest, warm_up=warm_up)
    if keep_warm:
        keeping_warm.keep_warm(spark)
    return spark


def check_home_free(home: Path, wait: float = HOME_RELEASE_WAIT) -> None:
    """Checks that no other process holds the metastore of ``home`` (embedded Derby, which
    one JVM at a time may open), before a JVM that would fail on it starts; waits up to
    ``wait`` seconds for a holder to let go (a session that is ending: its JVM closes the
    database a moment after its Python process returned).

    Derby holds a POSIX lock on ``metastore_db/dbex.lck`` while a JVM has the database open
    (a lock a crashed JVM no longer holds, unlike the file itself); the process holding it
    is in ``/proc/locks``.

    Raises:
        ConfigurationError: the home is in use, naming the lock file, the process and the fix.
    """
    lock = home / "metastore_db" / "dbex.lck"
    deadline = time.monotonic() + wait
    holder = _locked_by(lock)
    if holder is not None and wait > 0:
        logger.info("Waiting up to %.0f s for %s to close the metastore of %s", wait,
                    holder or "another process", home)
    while holder is not None and time.monotonic() < deadline:
        time.sleep(0.25)
        holder = _locked_by(lock)
    if holder is None:
        return
    raise ConfigurationError(
        f"the sql_dl home {home} is in use: another Spark session has its metastore open "
        f"({lock} is locked{f' by {holder}' if holder else ''}), and a home's metastore serves "
        "one session at a time. Give this one a home of its own (--home DIR, SQL_DL_HOME, or "
        f"home= in sql_dl.session), or stop the other session. Received: home={home}")


def _locked_by(lock: Path) -> str | None:
    """None when no process holds a lock on ``lock``; else who does ('' if unknown)."""
    import fcntl  # lazy: POSIX only

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:  # no metastore yet, or not ours to open: Spark says what is wrong
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        return _lock_holder(os.fstat(fd).st_ino) or ""
    finally:
        os.close(fd)


def _lock_holder(inode: int) -> str | None:
    """The process holding a POSIX lock on the file ``inode``, as ``process PID (command)``
    (the command of its parent too when it is a JVM, which Python started)."""
    try:
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in locks:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "POSIX" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            command = _command(pid)
            if command.split(" ", 1)[0].endswith("java"):
                parent = _parent(pid)
                if parent and _command(parent):
                    command = _command(parent)
                    pid = f"{pid}, a JVM of process {parent}"
            return f"process {pid} ({command[:120]})" if command else f"process {pid}"
    return None


def _command(pid: str) -> str:
    try:
        return " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                        .replace("\0", " ").split())  # one line: an argument may hold many
    except OSError:
        return ""


def _parent(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return None


def _start_logging_jvm(settings: Mapping[str, str], log: Path) -> None:
    """Starts the SparkContext on a driver JVM whose stderr goes to ``log``, except Spark's
    progress bar, which goes on to this process's stderr."""
    from pyspark import SparkConf, SparkContext

    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))
    conf = SparkConf(loadDefaults=False).setAll(list(settings.items()))
    try:
        gateway = launch_gateway(conf, subprocess.PIPE)
    except SparkInternalsError as e:
        logging.getLogger(__name__).warning("%s", e)
        return
    threading.Thread(target=_route_stderr, args=(gateway.proc.stderr, log),
                     name="sql_dl-jvm-stderr", daemon=True).start()
    SparkContext(conf=conf, gateway=gateway)
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):  # PySpark's JSON
        _python_logger_to(name, log)                                       # error lines


# Spark's console progress bar: "\r[Stage 1:=>   (3 + 2) / 8]", cleared with "\r   \r".
_PROGRESS = re.compile(rb"\r(?:\[Stage [^\r\n]*\]| *)(?=\r|\n|$)")


_progress_bar_shown = threading.Event()
_progress_bar_shown.set()


def show_progress_bar(shown: bool) -> None:
    """Whether Spark's progress bar (of a JVM whose stderr `session` routes) reaches the
    terminal: the shell hides it at its prompt, where a background job's bar (keep-warm's)
    would be drawn over the prompt and what the user types."""
    if shown:
        _progress_bar_shown.set()
    else:
        _progress_bar_shown.clear()


def _route_stderr(source: BinaryIO, log: Path) -> None:
    """Copies the JVM's stderr to ``log``, but its progress bar to this process's stderr
    (while it is shown: `show_progress_bar`)."""
    pending = b""
    with open(log, "ab", buffering=0) as out:
        while chunk := source.read1(65536):
            data, position = pending + chunk, 0
            for bar in _PROGRESS.finditer(data):
                out.write(data[position:bar.start()])
                if _progress_bar_shown.is_set():
                    os.write(2, bar.group(0))
                position = bar.end()
            rest = data[position:]
            cut = rest.rfind(b"\r")  # maybe a progress bar still being written
            pending = rest[cut:] if cut != -1 and b"\n" not in rest[cut:] else b""
            out.write(rest[:len(rest) - len(pending)])
        out.write(pending)


def _python_logger_to(name: str, log: Path) -> None:
    from pyspark.logger import PySparkLogger

    logger = PySparkLogger.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(logging.FileHandler(log))
    logger.propagate = False
