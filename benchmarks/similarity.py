"""Similarity search at scale: an index of N images' 1,280-value vectors, over JDBC.

For each ``--sizes`` N, it writes N small PNGs (8x8 RGB, each a noisy copy of one of N/100
cluster centres) and a Keras model that maps an image to a 1,280-value vector (a fixed random
Dense layer with ReLU over the pixels: clustered, non-negative vectors, as CNN features are),
starts ``sql-dl serve`` with an index ``bench_like`` on them, and measures:

- build: from the server's start until ``sql_dl_indexes`` says ``ready`` (every image
  embedded by a Spark job, and the graph built), and the index's own ``update_ms``;
- update: 1% more images copied in, then the ``update_ms`` of the search that follows them
  (only the new images are embedded);
- latency over JDBC (PyHive), p50 and p95 of ``--queries`` searches of k=10, interleaved:
  by path (the vector kept), by vector (a literal ``ARRAY<FLOAT>``), and by image (``(SELECT
  image FROM bench WHERE path = ...)``: the model runs on it once);
- recall@10 of the path searches against numpy's exact search on the index's own vectors;
- memory: the index service's resident set, and what the index holds (``memory_bytes``);
- Spark's exact nearest-neighbour join (``JOIN ... APPROX NEAREST 10 BY SIMILARITY``) of 10
  query vectors to the same N vectors, in a local session: the time per query.

    python benchmarks/similarity.py --sizes 10000 100000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import Server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIMS = 1280
SIDE = 8
K = 10


def make_images(folder: Path, n: int, start: int = 0, seed: int = 0) -> None:
    """``n`` PNGs (``start`` on), 8x8 RGB noisy copies of ``max(n // 100, 1)`` centres, in
    10 label folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, (max((start + n) // 100, 1), SIDE, SIDE, 3))
    picked = rng.integers(0, len(centres), n)
    noise = rng.normal(0, 40, (n, SIDE, SIDE, 3))
    pixels = np.clip(centres[picked] + noise, 0, 255).astype(np.uint8)
    for i, image in enumerate(pixels, start):
        label = folder / str(i % 10)
        label.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(label / f"{i:07d}.png")


def make_model(path: Path) -> None:
    """An image model whose output is a 1,280-value vector: a fixed random projection."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    x = keras.layers.Dense(DIMS, activation="relu", name="features")(x - 0.5)
    keras.Model(inputs, x).save(path)


def service_rss() -> int:
    """The resident set of the index service process(es), in bytes (from /proc)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"sql_dl.driver.index_service" in command:
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
                total += pages * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def state(cursor) -> dict:
    cursor.execute("SELECT state, images, update_ms, memory_bytes, directory, problem "
                   "FROM sql_dl_indexes WHERE index = 'bench_like'")
    row = cursor.fetchall()[0]
    return dict(zip(("state", "images", "update_ms", "memory", "directory", "problem"), row))


def exact_top(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The K nearest rows by cosine distance."""
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
    scores = (vectors @ query) / np.where(norms > 0, norms, 1)
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def measure(n: int, queries: int, work: Path) -> dict:
    from pyhive import hive

    images = work / "images"
    make_images(images, n)
    make_model(work / "bench.keras")
    manifest = work / "models.yaml"
    manifest.write_text(yaml.safe_dump({
        "models": {"bench": {"path": str(work / "bench.keras"), "batch_size": 512,
                             "features_layer": "features"}},
        "images": {"bench": {"path": str(images), "images_per_task": 8192}},
        "indexes": {"bench_like": {"view": "bench", "function": "bench_features"}},
        "cache": {"predictions": False}}))
    started = time.monotonic()
    server = Server(ROOT, manifest, work / "home", "local[2]")
    result: dict = {"n": n}
    try:
        cursor = hive.connect(host="127.0.0.1", port=server.port, username="bench").cursor()
        while (s := state(cursor))["state"] != "ready":
            if s["state"] == "failed":
                raise RuntimeError(s["problem"])
            time.sleep(1)
        result["build_s"] = time.monotonic() - started
        result["build_update_ms"] = s["update_ms"]
        directory = Path(s["directory"])
        import pandas as pd

        meta = pd.read_parquet(directory / "meta.parquet")
        meta = meta[meta.key >= 0]
        vectors = np.fromfile(directory / "vectors.f32", dtype=np.float32).reshape(-1, DIMS)
        vectors, paths = vectors[meta.key.to_numpy()], meta.path.to_numpy()
        rng = np.random.default_rng(1)
        picked = rng.choice(len(paths), queries, replace=False)
        times: dict[str, list[float]] = {"path": [], "vector": [], "image": []}
        recalls = []
        for i in picked:
            path = paths[i]
            literal = "array(" + ", ".join(f"{v:.6g}F" for v in vectors[i]) + ")"
            shapes = {"path": f"SELECT path FROM bench_like('{path}', {K})",
                      "vector": f"SELECT path FROM bench_like({literal}, {K})",
                      "image": f"SELECT path FROM bench_like((SELECT image FROM bench "
                               f"WHERE path = '{path}'), {K})"}
            for name, query in shapes.items():
                took = time.perf_counter()
                cursor.execute(query)
                found = [r[0] for r in cursor.fetchall()]
                times[name].append(time.perf_counter() - took)
                if name == "path":
                    truth = set(paths[exact_top(vectors, vectors[i])])
                    recalls.append(len(truth & set(found)) / K)
        for name, t in times.items():
            result[f"{name}_p50_ms"] = 1000 * float(np.percentile(t, 50))
            result[f"{name}_p95_ms"] = 1000 * float(np.percentile(t, 95))
        result["recall_at_10"] = float(np.mean(recalls))
        s = state(cursor)
        result["service_rss_mb"] = service_rss() / 2**20
        result["index_memory_mb"] = s["memory"] / 2**20
        make_images(images, n // 100, start=n, seed=2)  # 1% more
        cursor.execute(f"SELECT path FROM bench_like('{paths[0]}', {K})")
        cursor.fetchall()
        s = state(cursor)
        result["update_1pct_ms"] = s["update_ms"]
        result["images_after"] = s["images"]
    finally:
        server.stop()
    print(json.dumps(result), file=sys.stderr, flush=True)
    result["spark_join_ms_per_query"] = spark_join(vectors, work)
    return result


def spark_join(vectors: np.ndarray, work: Path) -> float:
    """Spark's exact nearest-neighbour join of 10 query vectors to ``vectors``, per query."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import sql_dl

    table = work / "vectors.parquet"
    pq.write_table(pa.table({"id": np.arange(len(vectors)),
                             "v": pa.FixedSizeListArray.from_arrays(
                                 pa.array(vectors.ravel()), DIMS).cast(
                                     pa.list_(pa.float32()))}), table, row_group_size=4096)
    spark = sql_dl.session(master="local[2]", home=work / "join-home",
                           conf={"spark.ui.enabled": "false", "spark.driver.memory": "8g"})
    try:
        spark.read.parquet(str(table)).createOrReplaceTempView("v")
        spark.sql("SELECT id, v FROM v WHERE id < 10").createOrReplaceTempView("q")
        query = ("SELECT q.id, b.id FROM q JOIN v AS b APPROX NEAREST 10 BY SIMILARITY "
                 "vector_cosine_similarity(q.v, b.v)")
        best = float("inf")
        for _ in range(3):
            took = time.perf_counter()
            spark.sql(query).collect()
            best = min(best, time.perf_counter() - took)
        return 1000 * best / 10
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--work", type=Path, default=None,
                        help="where the images and indexes go (default: a temporary folder)")
    args = parser.parse_args(argv)
    results = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"similarity-{n}-", dir=args.work))
        try:
            print(f"{n} images...", file=sys.stderr, flush=True)
            results.append(measure(n, args.queries, work))
            print(json.dumps(results[-1]), flush=True)
        finally:
            if not os.environ.get("KEEP"):
                shutil.rmtree(work, ignore_errors=True)
    columns = ["n", "build_s", "update_1pct_ms", "path_p50_ms", "path_p95_ms", "vector_p50_ms",
               "vector_p95_ms", "image_p50_ms", "image_p95_ms", "recall_at_10",
               "service_rss_mb", "index_memory_mb", "spark_join_ms_per_query"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in results:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) and c == "recall_at_10"
                                else f"{r[c]:,.0f}" if isinstance(r[c], (int, float))
                                else str(r[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
