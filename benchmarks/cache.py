"""The prediction cache: a query's first run, its repeated run over unchanged images, and a
run where a tenth of the images are new.

One session (``local[2]`` by default) with the model warm in its Python workers (bootstrap's
``warm_up``), over ``--images`` JPEGs (crops of the photos scikit-image and scikit-learn
ship) and a MobileNetV2 of random weights at 224x224. Each of ``--reps`` rounds runs,
interleaved:

- first run: ``SELECT path, m(image) FROM photos`` with an empty cache (its file deleted);
- repeated run: the same query again (every image answered from the cache);
- 10% new: a tenth as many new JPEGs added to the folder (new content each round), the
  query again, and the new files removed.

Prints the best time of each and its ratio to the first run, with the images scored and
answered from the cache (sql_dl's counters) and the cache's size on disk; a raw Keras loop
over the same files (pre-traced, once) gives the model's own rate for scale. Also times the
stores a cache could use, in this process, on outputs of the model's size (1,000 float32):
sql_dl's SQLite cache and, if the ``lmdb`` package is installed, LMDB.

    python benchmarks/cache.py --images 1024 --reps 3
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import BATCH, make_images, raw_keras  # noqa: E402

SIZE, MODE = (224, 224), "tf"
QUERY = "SELECT path, m(image) AS out FROM photos"


def timed_query(spark) -> tuple[float, dict]:
    from sql_dl.driver.counts import counts

    before = counts(spark)
    started = time.perf_counter()
    spark.sql(QUERY).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    done = counts(spark) - before
    return seconds, {"scored": done.scored, "cached": done.cached}


def clear_cache() -> None:
    from sql_dl.executor.prediction_cache import cache_path

    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache_path()}{suffix}").unlink(missing_ok=True)


def store_timings(work: Path, entries: int) -> dict[str, dict[str, float]]:
    """Seconds to put and then get ``entries`` outputs of 1,000 float32, in batches of 32."""
    from sql_dl.executor.prediction_cache import PredictionCache

    outputs = np.random.default_rng(0).random((entries, 1000), dtype=np.float32)
    cache = PredictionCache(work / "store.sqlite3", max_bytes=1 << 30)
    keys = cache.keys("model", [f"image {i}".encode() for i in range(entries)])
    batches = range(0, entries, BATCH)
    timings = {}
    started = time.perf_counter()
    for b in batches:
        cache.put("model", "m", list(zip(keys[b:b + BATCH], outputs[b:b + BATCH])))
    put = time.perf_counter() - started
    started = time.perf_counter()
    for b in batches:
        found = cache.get(keys[b:b + BATCH], 1000)
        cache.touch("model", "m", list(found))
    timings["SQLite (WAL), sql_dl's cache"] = {"put": put, "get": time.perf_counter() - started}
    try:
        import lmdb
    except ImportError:
        print("lmdb is not installed: LMDB not measured (pip install lmdb)", file=sys.stderr)
        return timings
    env = lmdb.open(str(work / "store.lmdb"), map_size=1 << 30)
    started = time.perf_counter()
    for b in batches:
        with env.begin(write=True) as txn:
            for key, output in zip(keys[b:b + BATCH], outputs[b:b + BATCH]):
                txn.put(key, output.tobytes())
    put = time.perf_counter() - started
    started = time.perf_counter()
    for b in batches:
        with env.begin() as txn:
            found = {k: np.frombuffer(txn.get(k), np.float32) for k in keys[b:b + BATCH]}
    assert len(found) == min(BATCH, entries - batches[-1])
    timings["LMDB (no LRU bookkeeping)"] = {"put": put, "get": time.perf_counter() - started}
    env.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="sql_dl-cache-bench-"))
    os.environ["SQL_DL_CACHE"] = str(work / "cache")  # the driver's and the workers'
    try:
        import keras

        import sql_dl
        from sql_dl.executor.prediction_cache import cache_path

        print(f"Making {args.images} JPEGs and a MobileNetV2 in {work}", file=sys.stderr)
        files = make_images(work / "images", args.images)
        model_file = work / "m.keras"
        keras.applications.MobileNetV2(weights=None).save(model_file)
        raw = raw_keras(model_file, files, SIZE, MODE, traced=True)
        spark = sql_dl.session(master=args.master, home=work / "home",
                               conf={"spark.ui.showConsoleProgress": "false"})
        sql_dl.bootstrap(spark, {
            "preprocessors": {"p": {"size": list(SIZE), "mode": MODE}},
            "models": {"m": {"path": str(model_file), "preprocessor": "p", "batch_size": BATCH}},
            "images": {"photos": {"path": str(work / "images")}}}, warm_up=True)
        new = max(1, args.images // 10)
        runs: dict[str, list[tuple[float, dict]]] = {"first run": [], "repeated run": [],
                                                     "10% new images": []}
        for rep in range(args.reps):
            print(f"Round {rep + 1} of {args.reps}", file=sys.stderr, flush=True)
            clear_cache()
            runs["first run"].append(timed_query(spark))
            runs["repeated run"].append(timed_query(spark))
            added = make_images(work / "new", new, seed=100 + rep)
            for f in added:
                shutil.move(f, work / "images" / f"new-{f.name}")
            runs["10% new images"].append(timed_query(spark))
            for f in added:
                (work / "images" / f"new-{f.name}").unlink()
        cache_bytes = sum(Path(f"{cache_path()}{s}").stat().st_size
                          for s in ("", "-wal") if Path(f"{cache_path()}{s}").exists())
        spark.stop()
        stores = store_timings(work, args.images)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {name: min(r, key=lambda run: run[0]) for name, r in runs.items()}
    first = best["first run"][0]
    results = {"images": args.images, "reps": args.reps, "master": args.master,
               "raw_keras_pre_traced_seconds": raw, "cache_file_bytes": cache_bytes,
               "runs": {name: {"seconds": s, "ratio_to_first": s / first, **done}
                        for name, (s, done) in best.items()},
               "all_seconds": {name: [s for s, _ in r] for name, r in runs.items()},
               "stores": stores}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{'run':<18}{'seconds':>9}{'images/s':>10}{'x first':>9}{'scored':>8}{'cached':>8}")
    for name, (s, done) in best.items():
        total = done["scored"] + done["cached"]
        print(f"{name:<18}{s:>9.2f}{total / s:>10.1f}{s / first:>9.2f}"
              f"{done['scored']:>8}{done['cached']:>8}")
    print(f"{'raw Keras loop':<18}{raw:>9.2f}{len(files) / raw:>10.1f}{raw / first:>9.2f}"
          f"   (pre-traced, in this process, once)")
    print(f"cache file: {cache_bytes / 2**20:.1f} MiB for {args.images} outputs")
    print(f"\n{'store':<32}{'put/s':>10}{'get/s':>10}   ({args.images} outputs of 4 kB, "
          f"batches of {BATCH})")
    for name, t in stores.items():
        print(f"{name:<32}{args.images / t['put']:>10.0f}{args.images / t['get']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
