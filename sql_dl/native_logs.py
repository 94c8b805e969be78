"""TensorFlow's start-up lines, kept off the terminal of sql_dl's commands and workers.

TensorFlow 2.21 logs ``oneDNN custom operations are on…`` through absl while importing,
before absl's logging is initialised, so absl writes it to file descriptor 2 with
``WARNING: All log messages before absl::InitializeLog() is called…`` and no
``TF_CPP_MIN_LOG_LEVEL`` or absl flag reaches it. `quiet_tensorflow_import` makes the
first import of ``tensorflow`` (directly or through Keras) run with descriptor 2 captured,
then writes back every captured line except those two: errors stay visible. Later INFO
lines are left to ``TF_CPP_MIN_LOG_LEVEL`` (`sql_dl.session` sets 1 for its workers).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading
from typing import Iterator

__all__ = ["NOISE", "quiet_tensorflow_import"]

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\.)")

_lock = threading.Lock()


@contextlib.contextmanager
def _filtered_fd2() -> Iterator[None]:
    """Captures what is written to descriptor 2, then writes back all but `NOISE` lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not NOISE.match(line.decode("utf-8", "replace"))]
            if kept:
                os.write(2, b"".join(kept))


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do, and runs its module code filtered."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        with _lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _filtered_fd2():
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


def quiet_tensorflow_import() -> None:
    """Filters TensorFlow's start-up lines from this process's first import of it; does
    nothing once TensorFlow is imported."""
    with _lock:
        if "tensorflow" in sys.modules or any(isinstance(f, _QuietFinder) for f in sys.meta_path):
            return
        sys.meta_path.insert(0, _QuietFinder())
