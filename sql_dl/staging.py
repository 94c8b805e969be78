"""Model files on their way to the executors: staged under a content-derived name on the
driver (shipped by the session's backend, `sql_dl.spark.backends.Backend.ship`), found again
(and unpacked) inside a task."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sql_dl.errors import ModelLoadError

__all__ = ["file_sha256", "shipped_file", "stage", "staged_name", "unpack"]


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, or of a directory's file names and contents, in hex."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root)).encode() if root.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def staged_name(path: str, sha256: str | None = None) -> str:
    """A name that changes with the content, so a changed model is shipped anew."""
    base = Path(path)
    digest = (sha256 or file_sha256(path))[:16]
    if base.is_dir():
        return f"{base.name}-{digest}.zip"
    return f"{base.stem}-{digest}{base.suffix}"


def stage(file: str, name: str, directory: Path) -> Path:
    """Copies a model under its staged ``name`` into ``directory`` (once); directories are
    zipped."""
    target = directory / name
    if target.exists():
        return target
    if os.path.isdir(file):
        archive = shutil.make_archive(str(target.with_suffix(f".{os.getpid()}")), "zip", file)
        os.replace(archive, target)
    else:
        shutil.copyfile(file, target)
    return target


def shipped_file(file: str, name: str) -> str:
    """Inside a Spark task, the copy of ``file`` Spark shipped as ``name`` (a zipped
    SavedModel unpacked); elsewhere ``file``."""
    from pyspark import SparkFiles, TaskContext  # lazy: the driver's checks run without Spark

    if TaskContext.get() is None:
        return file
    path = SparkFiles.get(name)
    if not os.path.exists(path):
        raise ModelLoadError(f"{name} was not shipped to this executor; run bootstrap (or "
                             f"the transform) again in this session. Received: file={file!r}")
    return unpack(path)


def unpack(staged: str) -> str:
    """The model path to load from a staged file: a zipped SavedModel is extracted once."""
    if not staged.endswith(".zip"):
        return staged
    target = staged[:-len(".zip")]
    if not os.path.isdir(target):
        partial = f"{target}.{os.getpid()}"
        shutil.unpack_archive(staged, partial, "zip")
        try:
            os.replace(partial, target)
        except OSError:  # another worker of this executor finished first
            shutil.rmtree(partial, ignore_errors=True)
    return target
