"""Where sql_dl's files are, computed in one place: the model cache, the home of a session's
metastore, the extension jar, and a source checkout's ``conf/`` and ``sql/`` folders.

Paths computed from a file's own location break silently when the file moves; every such
path is here, and ``tests/test_layout.py`` checks that each points where it should.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEMO_SQL", "JAR", "PACKAGE_DIR", "SOURCE_CONF_DIR", "cache_dir", "home_dir"]

PACKAGE_DIR = Path(__file__).resolve().parent
JAR = PACKAGE_DIR / "jars" / "sql_dl-spark.jar"  # built from jvm/ at install time
_CHECKOUT = PACKAGE_DIR.parent  # a source checkout's root (absent in an installed wheel)
SOURCE_CONF_DIR = _CHECKOUT / "conf"
DEMO_SQL = _CHECKOUT / "sql" / "demo.sql"


def cache_dir() -> Path:
    """Where built application models, converted OpenVINO models, trained models and the
    prediction cache are kept between runs: ``$SQL_DL_CACHE``, else ``~/.cache/sql_dl``."""
    return Path(os.environ.get("SQL_DL_CACHE", Path.home() / ".cache" / "sql_dl"))


def home_dir(home: str | os.PathLike | None = None) -> Path:
    """A session's metastore and warehouse directory: ``home``, else ``$SQL_DL_HOME``, else
    ``~/.sql_dl``."""
    return Path(home or os.environ.get("SQL_DL_HOME", Path.home() / ".sql_dl")).expanduser()
