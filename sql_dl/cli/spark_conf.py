"""``sql-dl spark-conf``: the Spark settings that make any Spark SQL entry point sql_dl-aware
(plugin mode: ``spark-sql``, the Thrift Server, Spark Connect, Kyuubi's engines), printed as
``spark-submit`` options or as lines of ``spark-defaults.conf`` / ``kyuubi-defaults.conf``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from sql_dl.driver.plugin import MANIFEST_CONF, PYTHON_CONF
from sql_dl.driver.policy import LOCKED_CONF
from sql_dl.driver.session import DEFAULT_CONF
from sql_dl.errors import ConfigurationError, ManifestError
from sql_dl.manifest import check_manifest, is_local, local_path
from sql_dl.paths import JAR
from sql_dl.spark.extension import EXTENSIONS

__all__ = ["ARCHIVE_ALIAS", "plugin_conf", "render"]

# where spark.archives unpacks the packed environment in each executor's working directory
ARCHIVE_ALIAS = "environment"
_EXECUTOR_SETTINGS = ("spark.python.worker.reuse", "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL")
_UNSAFE = re.compile(r"[\s*?\[]")  # what $(...) splits at or expands


def plugin_conf(manifest: str, python: str | None = None,
                archive: str | None = None) -> dict[str, str]:
    """The settings of plugin mode for ``manifest`` (a path, checked here, or a Hadoop URI).

    A manifest with an ``access`` section also gets `LOCKED_CONF` (a remote manifest is not
    read here: add them by hand, as the Deploy page says; plugin mode refuses to serve an
    access section without them). ``python`` plans the manifest on the driver (default: this interpreter) and, without
    ``archive``, runs the executors' Python workers too. With ``archive`` (what ``sql-dl
    pack`` builds: a path or URI), the executors unpack it and run its Python instead.

    Raises:
        ManifestError: a local manifest is invalid.
        ConfigurationError: sql_dl's jar was not built (no JDK at install time).
    """
    if not JAR.is_file():
        raise ConfigurationError(
            f"sql_dl's Spark extension jar ({JAR}) was not built: install a JDK (Debian: "
            "default-jdk-headless) and reinstall sql_dl")
    governed = False
    if is_local(manifest):
        loaded, problems = check_manifest(local_path(manifest))
        if problems:
            raise ManifestError(problems)
        manifest = str(Path(loaded.source).resolve())
        governed = loaded.access is not None
    python = python or sys.executable
    conf = {
        "spark.jars": str(JAR),
        "spark.sql.extensions": EXTENSIONS,
        MANIFEST_CONF: manifest,
        PYTHON_CONF: python,
        "spark.pyspark.python": python,
        **{key: DEFAULT_CONF[key] for key in _EXECUTOR_SETTINGS},
        # an access section: what keeps analysts off programs, files and settings
        **(LOCKED_CONF if governed else {}),
    }
    if archive:
        if is_local(archive):  # Spark ships a relative path from nowhere: make it absolute
            path = Path(local_path(archive)).resolve()
            if not path.is_file():
                raise ConfigurationError(f"--archive: {path} does not exist; build it with "
                                         f"sql-dl pack --output {archive}. Received: "
                                         f"--archive={archive}")
            archive = str(path)
        conf["spark.archives"] = f"{archive}#{ARCHIVE_ALIAS}"
        conf["spark.pyspark.python"] = f"./{ARCHIVE_ALIAS}/bin/python"
        conf["spark.pyspark.driver.python"] = python
    return conf


def render(conf: dict[str, str], form: str) -> str:
    """``submit``: spark-submit options as words for the shell's ``$(...)``, which splits
    them at blanks and expands no quotes (``--jars J --conf k=v ...``); ``defaults``:
    ``key value`` lines, for spark-defaults.conf, ``--properties-file`` or
    kyuubi-defaults.conf.

    Raises:
        ConfigurationError: for ``submit``, a value with a blank or a wildcard, which
            ``$(...)`` would split or expand.
    """
    if form == "defaults":
        return "".join(f"{key} {value}\n" for key, value in conf.items())
    words = []
    for key, value in conf.items():
        words += ["--jars", value] if key == "spark.jars" else ["--conf", f"{key}={value}"]
    unsafe = [word for word in words if _UNSAFE.search(word)]
    if unsafe:
        raise ConfigurationError(
            f"{unsafe[0]} has a blank or a wildcard, which the shell's $(...) would split or "
            "expand: use --format defaults > sql_dl.conf and give Spark --properties-file "
            "sql_dl.conf instead")
    return " ".join(words) + "\n"


def check_python(python: str) -> None:
    """Raises a ConfigurationError unless ``python`` is an executable file (a name on PATH
    passes: it is looked up where Spark runs it)."""
    if os.sep in python and not os.access(python, os.X_OK):
        raise ConfigurationError(f"--python: {python} is not an executable file; give the "
                                 f"Python that has sql_dl. Received: --python={python}")
