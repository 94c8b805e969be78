"""Per-Python-worker cache of loaded models: each is loaded once and reused across tasks and
queries, the least recently used dropped past `MAX_MODELS`.

A module is imported once per process, so its state lives as long as the (reused) worker.
After a load, the objects TensorFlow and the model created are frozen out of the garbage
collector's reach (`gc.freeze`): collecting them on every task cost about 0.2 s per query.
Dropping a model thaws them first, so its garbage is collected and not kept for the life
of the worker.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter, OrderedDict
from typing import Any, Callable

__all__ = ["MAX_MODELS", "get", "holds", "stats"]

MAX_MODELS = 8

_lock = threading.Lock()
_entries: OrderedDict[str, Any] = OrderedDict()  # loaded models and SavedModel signatures
_loads: Counter[str] = Counter()
_hits: Counter[str] = Counter()


def stats() -> dict[str, dict[str, int]]:
    """Per key (a model's ``ModelPlan.loaded_key``): how often this process loaded it and
    how often the cache answered."""
    return {"loads": dict(_loads), "hits": dict(_hits)}


def holds(key: str) -> bool:
    """Whether ``key`` is loaded in this process."""
    with _lock:
        return key in _entries


def get(key: str, load: Callable[[], Any]) -> Any:
    """The value cached under ``key``, or ``load()``'s, kept from now on."""
    with _lock:
        if key in _entries:
            _hits[key] += 1
            _entries.move_to_end(key)
            return _entries[key]
        loaded = load()
        _entries[key] = loaded
        _loads[key] += 1
        if len(_entries) > MAX_MODELS:
            gc.unfreeze()
            while len(_entries) > MAX_MODELS:
                _entries.popitem(last=False)
        gc.collect()
        gc.freeze()
        return loaded
