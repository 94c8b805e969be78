"""The per-worker registry of loaded models, which the ``sql_dl_devices`` view reads: each
Python worker records the models it holds, per device, in a file of the executor's
SparkFiles folder (which goes with the executor), so that any task of the same executor
can list those of every live worker.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from sql_dl.executor import model_cache
from sql_dl.executor.devices import DEFAULT_DEVICE

__all__ = ["executor_devices", "name_model", "note_models"]

_names: dict[str, str] = {}  # loaded key -> the manifest name it was first loaded as


def name_model(loaded_key: str, name: str) -> None:
    """Remembers the manifest name of the model loaded as ``loaded_key`` (the first given)."""
    _names.setdefault(loaded_key, name)


def note_models() -> None:
    """Records the models this Python worker holds, per device, where `executor_devices`
    in any task of the same executor finds them (a file per worker in the executor's
    SparkFiles folder, which goes with the executor)."""
    rows = []
    for key, loads in sorted(model_cache.stats()["loads"].items()):
        if not model_cache.holds(key):  # evicted
            continue
        loaded, _, device = key.partition("@")
        rows.append({"host": socket.gethostname(), "worker": os.getpid(),
                     "device": device or DEFAULT_DEVICE, "model": _names.get(loaded, loaded),
                     "loads": loads})
    folder = _registry()
    folder.mkdir(exist_ok=True)
    temporary = folder / f".{os.getpid()}.json"
    temporary.write_text(json.dumps(rows))
    temporary.replace(folder / f"{os.getpid()}.json")
    _live_files()  # one file per live worker: those of workers that exited go


def executor_devices() -> list[dict]:
    """The models of every live Python worker of the running task's executor, per device
    (as `note_models` recorded them)."""
    rows = []
    for path in _live_files():
        try:
            rows += json.loads(path.read_text())
        except (OSError, ValueError):  # gone or being replaced: its worker is listed next time
            continue
    return rows


def _live_files() -> list[Path]:
    """The registry's files of live workers; removes the others."""
    live = []
    for path in sorted(_registry().glob("[0-9]*.json")):
        if _alive(int(path.stem)):
            live.append(path)
        else:
            path.unlink(missing_ok=True)
    return live


def _registry() -> Path:
    from pyspark import SparkFiles

    return Path(SparkFiles.getRootDirectory()) / "sql_dl-workers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
