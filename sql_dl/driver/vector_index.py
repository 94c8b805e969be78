"""An embedding index on the driver's disk: the vectors of one image view by one function,
with an approximate nearest-neighbour graph over them (usearch's HNSW).

A folder holds it:

- ``vectors.f32``: every vector ever added, one row of float32 per key, appended;
- ``meta.parquet``: ``key, path, label, length, modification_time`` of each listed image
  (``key`` -1: the function gave it no vector, as for a file that does not decode);
- ``graph.usearch``: the HNSW graph (half-precision copies of the vectors, the keys);
- ``state.json``: the format, dimensions, metric, rows in ``vectors.f32`` and the last
  update, written last.

An update (`diff` then `commit`) embeds only the images whose path, length or modification
time are new; a removed or changed image leaves the graph. The graph gives candidates; their
distances are computed again, exactly, from the float32 vectors, so that they equal Spark's
vector functions on the same arrays. A folder whose files disagree with its ``state.json``
(a crash between writes) has its graph rebuilt from the vectors; one of another format,
dimension or metric is started again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["FORMAT", "IndexError_", "VectorIndex", "distances"]

FORMAT = 1
CONNECTIVITY = 16  # the graph's edges per node (HNSW's M)
EXPANSION_ADD = 128  # candidates kept while inserting (ef_construction)
EXPANSION_SEARCH = 64  # candidates kept while searching (ef), at least 2k
_USEARCH_METRIC = {"cosine": "cos", "l2": "l2sq", "inner": "ip"}
_COLUMNS = ["path", "label", "length", "modification_time"]


class IndexError_(ValueError):  # noqa: N801 - IndexError is Python's own
    """A request the index cannot answer; its message is one line for the user."""


def distances(query: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Each row's distance from ``query``, as Spark's vector functions give it:
    ``1 - vector_cosine_similarity`` (1 for a zero vector), ``vector_l2_distance`` or
    ``-vector_inner_product``; in float64."""
    q = query.astype(np.float64)
    v = vectors.astype(np.float64)
    if metric == "l2":
        return np.sqrt(((v - q) ** 2).sum(axis=1))
    dots = v @ q
    if metric == "inner":
        return -dots
    norms = np.linalg.norm(v, axis=1) * np.linalg.norm(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norms > 0, 1.0 - dots / np.where(norms > 0, norms, 1.0), 1.0)


class VectorIndex:
    """One index's folder, loaded. Not thread-safe: the index service calls it from one
    thread."""

    def __init__(self, directory: str | os.PathLike, dims: int, metric: str):
        self.directory = Path(directory)
        self.dims = int(dims)
        self.metric = metric
        self.updated: float | None = None  # seconds since the epoch of the last commit
        self._leaving: np.ndarray | None = None  # the rows the last diff removes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- state ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The images with a vector."""
        return int((self._meta["key"] >= 0).sum())

    @property
    def listed(self) -> int:
        """The images of the view it last followed, with a vector or not."""
        return len(self._meta)

    def _file(self, name: str) -> Path:
        return self.directory / name

    def _load(self) -> None:
        from usearch.index import Index

        self._graph = Index(ndim=self.dims, metric=_USEARCH_METRIC[self.metric], dtype="f16",
                            connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                            expansion_search=EXPANSION_SEARCH)
        self._meta = pd.DataFrame({"key": pd.Series(dtype="int64"),
                                   **{c: pd.Series(dtype="object" if c in ("path", "label")
                                                   else "int64") for c in _COLUMNS}})
        self._rows = 0
        state = self._read_state()
        if state is None:
            self._reset_files()
            return
        self._rows = state["rows"]
        self.updated = state.get("updated")
        self._truncate_vectors()
        self._meta = pd.read_parquet(self._file("meta.parquet"))
        graph = self._file("graph.usearch")
        live = self._meta["key"][self._meta["key"] >= 0].to_numpy()
        try:
            self._graph.load(str(graph))
            consistent = len(self._graph) == len(live) and (
                not len(live) or bool(np.all(self._graph.contains(live))))
        except Exception:  # noqa: BLE001 - a graph written half: built again below
            consistent = False
        if not consistent:
            self._rebuild_graph()
        self._index_meta()

    def _read_state(self) -> dict[str, Any] | None:
        """The folder's state, or None when it is missing or of another index."""
        try:
            state = json.loads(self._file("state.json").read_text())
        except (OSError, ValueError):
            return None
        vectors = self._file("vectors.f32")
        if (state.get("format") != FORMAT or state.get("dims") != self.dims
                or state.get("metric") != self.metric or not vectors.is_file()
                or not self._file("meta.parquet").is_file()
                or vectors.stat().st_size < state.get("rows", 0) * self.dims * 4):
            return None
        return state

    def _reset_files(self) -> None:
        for name in ("vectors.f32", "meta.parquet", "graph.usearch", "state.json"):
            self._file(name).unlink(missing_ok=True)
        self._file("vectors.f32").touch()
        self._index_meta()

    def _truncate_vectors(self) -> None:
        """Drops rows appended after the last state was written (a crash in between)."""
        with open(self._file("vectors.f32"), "r+b") as f:
            f.truncate(self._rows * self.dims * 4)

    def _vectors(self) -> np.ndarray:
        if self._rows == 0:
            return np.empty((0, self.dims), dtype=np.float32)
        return np.memmap(self._file("vectors.f32"), dtype=np.float32, mode="r",
                         shape=(self._rows, self.dims))

    def _rebuild_graph(self) -> None:
        self._graph.reset()
        live = self._meta["key"][self._meta["key"] >= 0].to_numpy()
        if len(live):
            self._graph.add(live, np.asarray(self._vectors()[live]))

    def _index_meta(self) -> None:
        """Path -> row of ``_meta``, and key -> (path, label), for lookups."""
        self._meta = self._meta.reset_index(drop=True)
        self._by_path = pd.Series(self._meta.index, index=self._meta["path"])
        keyed = self._meta[self._meta["key"] >= 0]
        self._by_key = pd.DataFrame({"path": keyed["path"].to_numpy(),
                                     "label": keyed["label"].to_numpy()},
                                    index=keyed["key"].to_numpy())

    # -- updates -------------------------------------------------------------------------

    def diff(self, listing: pd.DataFrame) -> dict[str, Any]:
        """What to embed to follow ``listing`` (``path, label, length,
        modification_time``: the view now): ``{"embed": "all" | [paths], "remove": n,
        "listed": n}``. `commit` then applies it with the embeddings."""
        listing = listing[_COLUMNS].drop_duplicates("path")
        known = self._meta.set_index("path")[["key", "length", "modification_time"]]
        joined = listing.join(known, on="path", rsuffix="_known")
        same = (joined["key"].notna() & (joined["length"] == joined["length_known"])
                & (joined["modification_time"] == joined["modification_time_known"]))
        embed = joined.loc[~same, "path"]
        gone = ~self._meta["path"].isin(listing["path"])
        changed = self._meta["path"].isin(embed)
        self._leaving = self._meta.loc[gone | changed].index.to_numpy()
        return {"embed": "all" if len(embed) == len(listing) and len(listing) else
                embed.tolist(), "remove": int(gone.sum()), "listed": len(listing)}

    def commit(self, chunks: Iterable[tuple[pd.DataFrame, np.ndarray]]) -> dict[str, Any]:
        """Applies the last `diff`: drops the images removed or changed, and adds each chunk's
        rows (``path, label, length, modification_time, embedded``) with its vectors (one per
        embedded row, in order). A row not embedded is kept with no vector, so that it is not
        embedded again until its file changes."""
        if self._leaving is None:
            raise IndexError_("commit without diff")
        leaving, self._leaving = self._leaving, None
        added = 0
        removed = self._remove_keys(self._meta.loc[leaving, "key"].to_numpy())
        self._meta = self._meta.drop(index=leaving)
        for rows, vectors in chunks:
            added += self._add(rows, vectors)
        self._index_meta()
        self.updated = time.time()
        self._save()
        return {"size": self.size, "listed": self.listed, "added": added, "removed": removed}

    def _remove_keys(self, keys: np.ndarray) -> int:
        keys = np.asarray(keys, dtype=np.int64)
        keys = keys[keys >= 0]
        if len(keys):
            self._graph.remove(keys)
        return len(keys)

    def _add(self, rows: pd.DataFrame, vectors: np.ndarray) -> int:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dims)
        embedded = rows["embedded"].to_numpy(dtype=bool)
        if int(embedded.sum()) != len(vectors):
            raise IndexError_(f"{int(embedded.sum())} rows embedded, {len(vectors)} vectors")
        # a path already kept (embedded in an earlier chunk or commit) leaves first
        again = self._meta["path"].isin(rows["path"])
        if again.any():
            self._remove_keys(self._meta.loc[again, "key"].to_numpy())
            self._meta = self._meta.loc[~again]
        keys = np.full(len(rows), -1, dtype=np.int64)
        keys[embedded] = np.arange(self._rows, self._rows + len(vectors))
        if len(vectors):
            with open(self._file("vectors.f32"), "ab") as f:
                f.write(vectors.tobytes())
                f.flush()
                os.fsync(f.fileno())
            self._graph.add(keys[embedded], vectors)
            self._rows += len(vectors)
        new = rows[_COLUMNS].assign(key=keys)[self._meta.columns]
        self._meta = pd.concat([self._meta, new], ignore_index=True)
        return len(vectors)

    def _save(self) -> None:
        """The graph and the rows, each written aside and renamed; the state last."""
        for name, write in (("graph.usearch", lambda p: self._graph.save(p)),
                            ("meta.parquet", lambda p: self._meta.to_parquet(p, index=False))):
            temporary = self._file(name + ".tmp")
            write(str(temporary))
            os.replace(temporary, self._file(name))
        state = {"format": FORMAT, "dims": self.dims, "metric": self.metric,
                 "rows": self._rows, "updated": self.updated}
        temporary = self._file("state.json.tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self._file("state.json"))

    # -- queries -------------------------------------------------------------------------

    def vector_of(self, path: str) -> np.ndarray | None:
        """The vector of an image of the view, or None when it has none."""
        if path not in self._by_path.index:
            return None
        key = int(self._meta.at[int(self._by_path[path]), "key"])
        return None if key < 0 else np.array(self._vectors()[key])

    def search(self, query: Sequence[float], k: int) -> dict[str, list]:
        """The ``k`` nearest images to ``query``: ``path``, ``label``, ``distance``."""
        q = np.asarray(query, dtype=np.float32)
        if q.shape != (self.dims,):
            raise IndexError_(f"the query vector has {q.size} values; this index's vectors "
                              f"have {self.dims}")
        live = self.size
        if live == 0:
            return {"path": [], "label": [], "distance": []}
        wanted = min(int(k), live)
        self._graph.expansion_search = max(EXPANSION_SEARCH, 2 * wanted)
        found = self._graph.search(q, min(live, 2 * wanted))
        keys = np.asarray(found.keys, dtype=np.int64)
        exact = distances(q, np.asarray(self._vectors()[keys]), self.metric)
        order = np.argsort(exact, kind="stable")[:wanted]
        rows = self._by_key.loc[keys[order]]
        return {"path": rows["path"].tolist(),
                "label": [None if pd.isna(v) else v for v in rows["label"].tolist()],
                "distance": [float(d) for d in exact[order]]}

    def memory(self) -> int:
        """Bytes held in memory: the graph (with its half-precision vectors) and the rows."""
        return int(self._graph.memory_usage) + int(self._meta.memory_usage(deep=True).sum())
