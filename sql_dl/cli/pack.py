"""``sql-dl pack``: the Python environment of the executors as one relocatable archive, for
``spark.archives`` (``sql-dl spark-conf --archive``): sql_dl, TensorFlow/Keras, PySpark's
Python side, OpenVINO with ``--extras openvino``.

A fresh virtual environment is made from this Python's base interpreter, sql_dl is installed
into it from its source checkout (not as an editable install: the archive must hold it) with
every other package pinned to the version this environment has (so the executors run what
the driver planned with), the parts no executor reads are removed (`TRIMMED`), and venv-pack
packs it. The archive holds no interpreter: each executor machine needs the same base Python
at the same path (``pack`` names it), or use the Dockerfile of the Deploy page instead.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from sql_dl.errors import ConfigurationError
from sql_dl.paths import PACKAGE_DIR

__all__ = ["Packed", "TRIMMED", "pack"]

logger = logging.getLogger(__name__)

# Parts of the environment no executor's Python worker reads, relative to site-packages: the
# JVM's jars (the executors have Spark's own) and TensorFlow's C++ headers.
TRIMMED = ("pyspark/jars", "pyspark/examples", "tensorflow/include")
_CHECKOUT = PACKAGE_DIR.parent


class Packed(NamedTuple):
    """What `pack` made."""

    archive: Path
    bytes: int
    unpacked_bytes: int
    trimmed_bytes: int
    base_python: str
    seconds: float


def pack(output: Path, extras: tuple[str, ...] = (), trim: bool = True,
         compress_level: int = 4) -> Packed:
    """Builds the executors' environment into ``output`` (``.tar.gz``, ``.tgz``, ``.tar`` or
    ``.zip``: venv-pack infers the format from it).

    Raises:
        ConfigurationError: venv-pack is not installed, sql_dl has no source checkout to
            install from, or ``output`` exists or has another suffix.
    """
    started = time.monotonic()
    try:
        import venv_pack
    except ImportError as e:
        raise ConfigurationError("sql-dl pack needs venv-pack: pip install 'sql_dl[pack]' (or "
                                 "pip install venv-pack)") from e
    if not (_CHECKOUT / "setup.py").is_file():
        raise ConfigurationError(f"sql-dl pack installs sql_dl from its source checkout, and "
                                 f"this sql_dl ({PACKAGE_DIR}) is not in one; run it from a "
                                 "checkout's .venv")
    if not output.name.endswith((".tar.gz", ".tgz", ".tar", ".zip")):
        raise ConfigurationError(f"--output: the archive's name must end in .tar.gz, .tgz, .tar "
                                 f"or .zip (Spark unpacks those). Received: --output={output}")
    if output.exists():
        raise ConfigurationError(f"--output: {output} exists; remove it or give another name. "
                                 f"Received: --output={output}")
    base = getattr(sys, "_base_executable", sys.executable)
    with tempfile.TemporaryDirectory(prefix="sql_dl-pack-") as work:
        env = Path(work) / "env"
        logger.info("Making a virtual environment of %s", base)
        _run([base, "-m", "venv", str(env)])
        constraints = Path(work) / "constraints.txt"
        constraints.write_text(_run([sys.executable, "-m", "pip", "freeze",
                                     "--exclude-editable"]))
        target = f"{_CHECKOUT}[{','.join(extras)}]" if extras else str(_CHECKOUT)
        logger.info("Installing sql_dl%s with this environment's versions (a few minutes: "
                    "TensorFlow is large)", f" [{','.join(extras)}]" if extras else "")
        _run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
              "-c", str(constraints), target])
        trimmed = _trim(env) if trim else 0
        unpacked = _size(env)
        logger.info("Packing %.0f MB into %s", unpacked / 1e6, output)
        venv_pack.pack(prefix=str(env), output=str(output), compress_level=compress_level)
    return Packed(output, output.stat().st_size, unpacked, trimmed, base,
                  time.monotonic() - started)


def _trim(env: Path) -> int:
    """Removes `TRIMMED` from the environment; returns the bytes removed."""
    removed = 0
    for site in env.glob("lib/python*/site-packages"):
        for part in TRIMMED:
            if (site / part).is_dir():
                removed += _size(site / part)
                shutil.rmtree(site / part)
    return removed


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _run(command: list[str]) -> str:
    """Runs ``command``; its stdout, or a ConfigurationError with its last lines."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise ConfigurationError(f"sql-dl pack: {' '.join(command[:4])} ... failed:\n{last}")
    return result.stdout
