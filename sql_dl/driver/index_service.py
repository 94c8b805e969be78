"""``python -m sql_dl.driver.index_service``: the process on the driver that holds the
manifest's embedding indexes (`sql_dl.driver.vector_index`) and answers sql_dl's Spark
extension (``jvm/src/sql_dl/spark/similarity``), which starts it once per driver JVM.

It reads one JSON request per line on stdin and writes one JSON answer per line on stdout
(``{"error": "..."}`` when a request fails). Requests name an index by its folder:

- ``{"op": "open", "dir", "dims", "metric"}``: loads the index (or starts it empty);
  answers ``size, listed, updated, memory``;
- ``{"op": "diff", "dir", "listing"}``: ``listing`` is a Parquet folder of ``path, label,
  length, modification_time`` (microseconds), the view now; answers ``embed`` (``"all"`` or
  the paths to embed), ``remove`` and ``listed``;
- ``{"op": "commit", "dir"[, "embeddings"]}``: ``embeddings`` is a Parquet folder of the
  same columns and ``vector`` (NULL for an image the function gave none), read in batches;
  answers ``size, listed, added, removed, updated, memory``;
- ``{"op": "search", "dir", "vector", "k"}`` or ``{"op": "search", "dir", "path", "k"}``:
  answers ``path, label, distance`` nearest first (``missing`` for a path without a vector);
- ``{"op": "version"}``: sql_dl's version.

The answers on stdout are the protocol; anything a library prints goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterator

import numpy as np
import pandas as pd

from sql_dl._version import __version__
from sql_dl.driver.vector_index import IndexError_, VectorIndex

__all__ = ["main"]


_BATCH = 65_536  # rows of embeddings read at a time


def _batches(folder: str, dims: int) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The rows of a Parquet folder of embeddings, and the vectors of those embedded."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    for batch in ds.dataset(folder, format="parquet").to_batches(batch_size=_BATCH):
        vectors = batch.column("vector")
        embedded = vectors.is_valid().to_numpy(zero_copy_only=False)
        rows = batch.drop_columns(["vector"]).to_pandas().assign(embedded=embedded)
        kept = pc.list_flatten(vectors.filter(vectors.is_valid()))
        values = kept.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if values.size != int(embedded.sum()) * dims:
            raise IndexError_(f"the function gave vectors of another length than {dims}")
        yield rows, values.reshape(-1, dims)


class _Service:
    def __init__(self) -> None:
        self.indexes: dict[str, VectorIndex] = {}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "version":
            return {"version": __version__}
        if op == "open":
            index = VectorIndex(request["dir"], request["dims"], request["metric"])
            self.indexes[request["dir"]] = index
            return self._state(index)
        index = self.indexes.get(request.get("dir"))
        if index is None:
            raise IndexError_(f"no index is open at {request.get('dir')}")
        if op == "diff":
            return index.diff(pd.read_parquet(request["listing"]))
        if op == "commit":
            folder = request.get("embeddings")
            chunks = _batches(folder, index.dims) if folder else iter(())
            return {**index.commit(chunks), **self._state(index)}
        if op == "search":
            if "path" in request:
                vector = index.vector_of(request["path"])
                if vector is None:
                    return {"missing": True}
            else:
                vector = request["vector"]
            return index.search(vector, int(request["k"]))
        raise IndexError_(f"unknown request {op!r}")

    @staticmethod
    def _state(index: VectorIndex) -> dict[str, Any]:
        return {"size": index.size, "listed": index.listed, "updated": index.updated,
                "memory": index.memory()}


def main() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints of libraries: to stderr
    sys.stdout = sys.stderr
    service = _Service()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = service.handle(json.loads(line))
        except (IndexError_, KeyError, ValueError, OSError) as e:
            answer = {"error": str(e) if isinstance(e, IndexError_)
                      else f"{type(e).__name__}: {e}"}
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
