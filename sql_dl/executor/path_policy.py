"""Which paths sql_dl's functions may read when given a path instead of image bytes.

Everywhere but ``sql-dl serve``, any path or URI the process can read. In ``sql-dl serve``
(which puts the policy in `PATH_POLICY_ENV` of every Python worker it starts) only regular
files under the manifest's image folders, each up to its view's ``max_file_size``, checked
before a byte is read; any other path, URI scheme, device, FIFO or ``/proc`` entry is
refused with the same message whether or not it exists, so a function is neither an
existence oracle nor a way to send requests to other hosts.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import stat
from typing import NamedTuple
from urllib.parse import urlparse

from sql_dl.manifest import is_local, local_path
from sql_dl.rules import PATH_POLICY_ENV

__all__ = ["PathPolicy", "Root", "current_policy"]

_GLOB = "*?[{"


class Root(NamedTuple):
    """An image folder: a directory (``/data/photos``) or URI prefix (``s3://b/photos``)."""

    prefix: str
    max_bytes: int


def root_of(path: str) -> str:
    """The folder an image view's ``path`` (a directory or glob) lists: the part before the
    first glob character, up to its last ``/``."""
    cut = min([path.index(c) for c in _GLOB if c in path], default=None)
    if cut is not None:
        path = path[:cut].rsplit("/", 1)[0] or "/"
    return path.rstrip("/") or "/"


class PathPolicy:
    """Reads a path only under one of ``roots``."""

    def __init__(self, roots: list[Root]):
        self.roots = [Root(os.path.realpath(local_path(r.prefix)) if is_local(r.prefix)
                           else r.prefix.rstrip("/"), r.max_bytes) for r in roots]

    def to_json(self) -> str:
        return json.dumps([list(r) for r in self.roots])

    @classmethod
    def from_json(cls, text: str) -> PathPolicy:
        return cls([Root(prefix, int(size)) for prefix, size in json.loads(text)])

    def refusal(self, uri: str) -> PermissionError:
        return PermissionError(
            "sql-dl serve reads image bytes, or paths under the manifest's image folders, and "
            f"nothing else. Received: path={uri!r}")

    def read(self, uri: str) -> bytes:
        """The bytes of ``uri``, if the policy lets sql_dl read it.

        Raises:
            PermissionError: outside every root (the same message whether or not it
                exists), not a regular file, or over its root's size limit.
        """
        if is_local(uri):
            return self._read_local(local_path(uri), uri)
        return self._read_remote(uri)

    def _root(self, path: str, local: bool) -> Root | None:
        separator = os.sep if local else "/"
        for root in self.roots:
            if (is_local(root.prefix) == local
                    and (path == root.prefix or path.startswith(root.prefix.rstrip(separator)
                                                                 + separator))):
                return root
        return None

    def _read_local(self, path: str, uri: str) -> bytes:
        real = os.path.realpath(path)  # symbolic links and .. resolved before the check
        root = self._root(real, local=True)
        if root is None or real.startswith("/proc/") or real.startswith("/dev/"):
            raise self.refusal(uri)
        info = os.stat(real)
        self._check(info.st_mode, info.st_size, root, uri)  # before opening: a FIFO blocks
        # non-blocking, not following a link swapped in since: checked again once open
        descriptor = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with open(descriptor, "rb", buffering=0) as f:
            info = os.fstat(f.fileno())
            self._check(info.st_mode, info.st_size, root, uri)
            return f.read(root.max_bytes + 1)

    def _read_remote(self, uri: str) -> bytes:
        parsed = urlparse(uri)
        normalized = posixpath.normpath(parsed.path) if parsed.path else ""
        if (parsed.query or parsed.fragment or parsed.params or "\\" in uri
                or normalized != parsed.path.rstrip("/") or "/.." in uri):
            raise self.refusal(uri)
        root = self._root(uri, local=False)
        if root is None:
            raise self.refusal(uri)
        from pyarrow import fs

        filesystem, path = fs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(path)
        if info.type != fs.FileType.File:
            raise FileNotFoundError(f"no such file: {uri}")
        self._check(stat.S_IFREG, info.size, root, uri)
        with filesystem.open_input_stream(path) as f:
            return f.read(root.max_bytes + 1)

    @staticmethod
    def _check(mode: int, size: int, root: Root, uri: str) -> None:
        if not stat.S_ISREG(mode):
            raise PermissionError(f"not a regular file (a device, FIFO or directory): sql_dl "
                                  f"reads image files only. Received: path={uri!r}")
        if size > root.max_bytes:
            raise PermissionError(f"{size} bytes is over the image view's max_file_size of "
                                  f"{root.max_bytes} bytes. Received: path={uri!r}")


@functools.lru_cache(maxsize=4)
def _parsed(text: str) -> PathPolicy:
    return PathPolicy.from_json(text)


def current_policy() -> PathPolicy | None:
    """The policy of this process (from `PATH_POLICY_ENV`), None where there is none."""
    text = os.environ.get(PATH_POLICY_ENV)
    return _parsed(text) if text else None
