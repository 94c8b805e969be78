"""Approximate nearest-neighbour libraries side by side, for the embedding indexes of image
views: recall@10 against exact search, build time, single-query latency and memory.

The vectors stand for ``<model>_features`` outputs: ``--dim`` (default 1,280, MobileNetV2's
pooled features) non-negative floats (features after a ReLU and global pooling), drawn
around ``--n / 100`` cluster centres, as embeddings of a photo collection cluster by
subject, then L2-normalized; the metric is cosine. The queries are 500 more vectors of the
same distribution. Exact search (numpy, one matrix product per block) gives the true 10
nearest.

Each library gets the same data and its HNSW graph the same shape (M=16 links,
ef_construction=200), built with every core; queries run one at a time, as a SQL query
asks for one image's neighbours, at ef_search=64 and 128. Memory is the growth of this
process's resident set while the index is built, less the vectors (which every library
copies in).

    python benchmarks/ann_libraries.py --n 10000 100000 --libraries usearch hnswlib faiss voyager

The libraries are not sql_dl's dependencies: ``pip install usearch faiss-cpu voyager hnswlib``
(hnswlib has no wheel, and compiles from source).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time

import numpy as np

K = 10
QUERIES = 500
M, EF_CONSTRUCTION, EF_SEARCH = 16, 200, (64, 128)


def vectors(n: int, dim: int, spread: float = 0.6, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors around ``n / 100`` non-negative centres, each coordinate spread
    around its centre's with that standard deviation (see the module): the larger the spread,
    the less the clusters stand apart, and the harder approximate search is."""
    rng = np.random.default_rng(seed)
    centres = np.maximum(rng.normal(0, 1, (max(n // 100, 1), dim)), 0).astype(np.float32)
    picked = centres[rng.integers(0, len(centres), n)]
    data = np.maximum(picked + rng.normal(0, spread, (n, dim)).astype(np.float32), 0)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def exact(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The true ``K`` nearest (largest inner product of unit vectors) of each query."""
    found = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), 100):
        scores = queries[start:start + 100] @ data.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        found[start:start + 100] = np.take_along_axis(top, order, axis=1)
    return found


def rss() -> int:
    """This process's resident set now, in bytes (from /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Usearch:
    name = "usearch"

    def build(self, data):
        from usearch.index import Index

        self.index = Index(ndim=data.shape[1], metric="cos", dtype="f32", connectivity=M,
                           expansion_add=EF_CONSTRUCTION)
        self.index.add(np.arange(len(data)), data, threads=os.cpu_count())

    def search(self, query, ef):
        self.index.expansion_search = ef
        return self.index.search(query, K, threads=1).keys


class UsearchHalf(Usearch):
    """usearch keeping the vectors as float16: half the memory."""

    name = "usearch f16"

    def build(self, data):
        from usearch.index import Index

        self.index = Index(ndim=data.shape[1], metric="cos", dtype="f16", connectivity=M,
                           expansion_add=EF_CONSTRUCTION)
        self.index.add(np.arange(len(data)), data, threads=os.cpu_count())


class Hnswlib:
    name = "hnswlib"

    def build(self, data):
        import hnswlib

        self.index = hnswlib.Index(space="cosine", dim=data.shape[1])
        self.index.init_index(max_elements=len(data), M=M, ef_construction=EF_CONSTRUCTION)
        self.index.add_items(data, np.arange(len(data)), num_threads=os.cpu_count())

    def search(self, query, ef):
        self.index.set_ef(ef)
        return self.index.knn_query(query, K, num_threads=1)[0][0]


class Faiss:
    name = "faiss HNSW"

    def build(self, data):
        import faiss

        self.index = faiss.IndexHNSWFlat(data.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(data)

    def search(self, query, ef):
        import faiss

        faiss.omp_set_num_threads(1)
        self.index.hnsw.efSearch = ef
        return self.index.search(query[None], K)[1][0]


class Voyager:
    name = "voyager"

    def build(self, data):
        from voyager import Index, Space

        self.index = Index(Space.Cosine, num_dimensions=data.shape[1], M=M,
                           ef_construction=EF_CONSTRUCTION)
        self.index.add_items(data, num_threads=os.cpu_count())

    def search(self, query, ef):
        return self.index.query(query, K, query_ef=ef)[0]


LIBRARIES = {"usearch": Usearch, "usearch-f16": UsearchHalf, "hnswlib": Hnswlib,
             "faiss": Faiss, "voyager": Voyager}


def measure(library, data, queries, truth) -> list[dict]:
    gc.collect()
    before = rss()
    started = time.perf_counter()
    library.build(data)
    built = time.perf_counter() - started
    memory = rss() - before
    rows = []
    for ef in EF_SEARCH:
        found, times = [], []
        for query in queries:
            started = time.perf_counter()
            found.append(np.asarray(library.search(query, ef))[:K])
            times.append(time.perf_counter() - started)
        recall = np.mean([len(set(f.tolist()) & set(t.tolist())) / K
                          for f, t in zip(found, truth)])
        rows.append({"library": library.name, "ef": ef, "build_s": built,
                     "memory_mb": memory / 1e6, "recall": recall,
                     "p50_ms": 1000 * np.percentile(times, 50),
                     "p95_ms": 1000 * np.percentile(times, 95)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--spread", type=float, default=0.6,
                        help="how far vectors spread around their cluster's centre")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES),
                        choices=list(LIBRARIES))
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; max RSS so far "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB")
    print("| vectors | library | ef | build (s) | index memory (MB) | recall@10 | p50 (ms) | "
          "p95 (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.n:
        everything = vectors(n + QUERIES, args.dim, args.spread)
        data, queries = everything[:n], everything[n:]
        started = time.perf_counter()
        truth = exact(data, queries)
        exact_ms = 1000 * (time.perf_counter() - started) / len(queries)
        print(f"| {n:,} | exact (numpy, per query in blocks of 100) | | | "
              f"{data.nbytes / 1e6:.0f} | 1.000 | {exact_ms:.1f} | |", flush=True)
        for name in args.libraries:
            library = LIBRARIES[name]()
            try:
                rows = measure(library, data, queries, truth)
            except ImportError as e:
                print(f"| {n:,} | {name} | not installed: {e} | | | | | |", flush=True)
                continue
            for r in rows:
                print(f"| {n:,} | {r['library']} | {r['ef']} | {r['build_s']:.1f} | "
                      f"{r['memory_mb']:.0f} | {r['recall']:.3f} | {r['p50_ms']:.2f} | "
                      f"{r['p95_ms']:.2f} |", flush=True)
            del library
            gc.collect()


if __name__ == "__main__":
    main()
