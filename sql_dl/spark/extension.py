"""sql_dl's JVM part: the Spark session extension built from ``jvm/`` at install time.

Its rules: ``LateImages`` (image views read their folder's catalog, brought up to date as
each query starts, and read image files for the rows a query needs only),
``TopNBeforePython`` (in ``ORDER BY <no model output> LIMIT n`` queries, model functions run
on the n rows returned instead of every row) and ``ReleasePythonWorkers`` (previews keep
their Python worker), and ``CheckedArguments`` (each call of a manifest's function has its
arguments checked as Spark analyses it). A session gets it through two static
settings, which `sql_dl.session` (and so ``sql-dl sql``/``serve``) adds; `check_extension`
tells the user of any other session how to get it. The classes that only ``sql-dl serve``
uses are in ``jvm/src/sql_dl/spark/thrift/``.
"""

from __future__ import annotations

import warnings
from typing import Mapping

from sql_dl.errors import SqlDlWarning
from sql_dl.paths import JAR

__all__ = ["EXTENSIONS", "check_extension", "extension_active", "extension_conf"]

EXTENSIONS = "sql_dl.spark.SqlDlExtensions"


def _joined(existing: str | None, item: str) -> str:
    items = [i.strip() for i in (existing or "").split(",") if i.strip()]
    return ",".join(items if item in items else [*items, item])


def extension_conf(conf: Mapping[str, str]) -> dict[str, str]:
    """``spark.jars`` and ``spark.sql.extensions`` of ``conf`` with sql_dl's added, or
    nothing when the jar was not built."""
    if not JAR.is_file():
        return {}
    return {"spark.jars": _joined(conf.get("spark.jars"), str(JAR)),
            "spark.sql.extensions": _joined(conf.get("spark.sql.extensions"), EXTENSIONS)}


def extension_active(spark) -> bool:
    """Whether ``spark`` was built with sql_dl's extension (its rules, and its classes on
    the driver's classpath)."""
    return EXTENSIONS in spark.conf.get("spark.sql.extensions", "")


def check_extension(spark) -> bool:
    """Whether ``spark`` runs sql_dl's extension; if not, warns with the fix."""
    active = extension_active(spark)
    if not active:
        fix = (f'.config("spark.jars", "{JAR}").config("spark.sql.extensions", "{EXTENSIONS}")'
               if JAR.is_file() else "a JDK (javac) at install time: install one (Debian: "
               "default-jdk-headless) and reinstall sql_dl, then build the session with "
               f'spark.jars=<sql_dl>/jars/sql_dl-spark.jar and spark.sql.extensions={EXTENSIONS}')
        warnings.warn(
            "sql_dl's Spark extension is not active in this session, so ORDER BY ... LIMIT n "
            "queries run model functions on every row, not only on the n returned, "
            "LIMIT n previews end with a Python worker (and its loaded model) killed, and "
            "image views keep the files listed at bootstrap. It needs "
            f"{fix} when the session is built (sql_dl.session does this). "
            f"Received: spark.sql.extensions={spark.conf.get('spark.sql.extensions', '')!r}",
            SqlDlWarning, stacklevel=3)
    return active
