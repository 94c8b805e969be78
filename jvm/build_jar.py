"""Builds sql_dl's Spark extension (jvm/src, Java) into sql_dl/jars/sql_dl-spark.jar with the
JDK's javac and jar, against the Spark jars of the installed pyspark. Nothing is downloaded.

Run by setup.py (``pip install .``, ``pip install -e .``) and by ``.ci/setup``; by hand:
``python jvm/build_jar.py``. Without a JDK it says so and builds nothing: sql_dl then works
without the extension, and ``bootstrap`` warns that top-N queries score every row.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "jvm" / "src"
JAR = ROOT / "sql_dl" / "jars" / "sql_dl-spark.jar"


def spark_jars() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    return jars if jars.is_dir() else None


def version() -> str:
    """sql_dl's version, from ``sql_dl/_version.py`` (read as text: sql_dl may not be
    importable while it is being installed)."""
    text = (ROOT / "sql_dl" / "_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def build(jar: Path = JAR) -> bool:
    """Compiles the extension into ``jar``; returns whether it did (False: no JDK or no
    pyspark, with the reason on stderr)."""
    javac, jar_tool, jars = shutil.which("javac"), shutil.which("jar"), spark_jars()
    if javac is None or jar_tool is None or jars is None:
        missing = "a JDK (javac, jar)" if jars is not None else "pyspark"
        print(f"sql_dl: not building the Spark extension: {missing} is not installed, so "
              "ORDER BY ... LIMIT queries will score every row (Debian: apt-get install "
              "default-jdk-headless, then reinstall sql_dl)", file=sys.stderr)
        return False
    sources = sorted(str(p) for p in SOURCES.rglob("*.java"))
    with tempfile.TemporaryDirectory() as classes:
        subprocess.run([javac, "--release", "17", "-nowarn", "-d", classes,
                        "-cp", str(jars / "*"), *sources], check=True)
        # the plugin checks that the Python it plans with has this version of sql_dl
        (Path(classes) / "sql_dl" / "version.properties").write_text(f"version={version()}\n")
        jar.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([jar_tool, "cf", str(jar), "-C", classes, "."], check=True)
    print(f"sql_dl: built {jar}", file=sys.stderr)
    return True


if __name__ == "__main__":
    sys.exit(0 if build() else 1)
