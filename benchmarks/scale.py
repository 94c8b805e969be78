"""Image views at scale: 10,000 to 1,000,000 small JPEGs, what BI queries cost.

Writes N JPEGs of 64x64 (about 2-4 kB: crops of the photos scikit-image and scikit-learn
ship) in folders of 1,000 under ``--root`` (kept between runs: writing a million takes
minutes), then, for each size, in a driver of its own (``local[2]``, Spark's default 1 GB
driver heap, ``cache: false``, a tiny 64x64 CNN):

- bootstrap: ``sql_dl.session`` + ``bootstrap`` (the view is registered at once; its
  catalog is built in the background), and the first ``count(*)``, which waits for it;
- ``count(*)``, a label filter, a ``LIMIT 20`` preview with the model, a top-N
  (``ORDER BY path DESC LIMIT 20`` with the model): best of ``--reps`` runs;
- refresh: 5 files added and 3 deleted, then ``count(*)`` (the catalog lists the changed
  folders again);
- restart: a new driver over the same folder, its bootstrap and first ``count(*)`` (the
  catalog is loaded, not listed);
- the driver's heap in use after a full GC.

And, for the sizes in ``--scan-sizes``, a full scan (``SELECT m(image)``) in images per
second against the raw loop: Keras's own decode + preprocess + predict (``load_img``,
``img_to_array``, ``preprocess_input``, ``predict_on_batch``, which give sql_dl's answers),
in one process per core, on the same files, each process with the model loaded and its
predict step traced before the clock starts. The two alternate in the same driver, best of ``--reps`` each,
after a warm-up of both on two folders.

    python benchmarks/scale.py --sizes 10000,100000,1000000 --root /tmp/sql_dl-scale
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SIZE = (64, 64)
PER_FOLDER = 1000
BATCH = 64  # the model's batch_size in the manifest, and the raw loop's
_SPAWN = multiprocessing.get_context("spawn")  # this process may hold TensorFlow's threads


def _write_folder(args) -> int:
    folder, start, count, seed = args
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
              skimage.data.rocket(), *load_sample_images().images]
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(64, min(h, w, 256) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        Image.fromarray(photo[top:top + side, left:left + side]).resize(SIZE).save(
            folder / f"{i:07d}.jpg", quality=85)
    return count


def make_lake(root: Path, count: int) -> Path:
    """``count`` JPEGs in folders of 1,000 under ``root/<count>`` (made once)."""
    lake = root / str(count)
    done = lake / ".complete"
    if done.exists():
        return lake
    shutil.rmtree(lake, ignore_errors=True)
    jobs = [(str(lake / f"d{start // PER_FOLDER:05d}"), start, min(PER_FOLDER, count - start),
             start) for start in range(0, count, PER_FOLDER)]
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count(), mp_context=_SPAWN) as pool:
        for n, _ in enumerate(pool.map(_write_folder, jobs), 1):
            if n % 100 == 0:
                print(f"  wrote {n * PER_FOLDER:,} of {count:,} files", file=sys.stderr)
    done.write_text("")
    print(f"  wrote {count:,} JPEGs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return lake


def make_model(path: Path) -> Path:
    if not path.exists():
        import keras

        model = keras.Sequential([
            keras.Input((*SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax")])
        model.save(path)
    return path


def _best(function, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(lake: Path, model: Path, home: Path, reps: int, scan: bool) -> dict:
    """One driver's figures (run in a process of its own: see main)."""
    started = time.perf_counter()
    import sql_dl

    spark = sql_dl.session(master="local[2]", home=home, conf={"spark.ui.enabled": "false"})
    manifest = {"cache": False,
                "preprocessors": {"p": {"size": list(SIZE), "mode": "tf"}},
                "models": {"m": {"path": str(model), "preprocessor": "p", "batch_size": BATCH}},
                "images": {"lake": {"path": str(lake)}}}
    sql_dl.bootstrap(spark, manifest, warm_up=True)
    result = {"bootstrap_s": time.perf_counter() - started}
    first = time.perf_counter()
    files = spark.sql("SELECT count(*) AS n FROM lake").first().n
    result["first_count_s"] = time.perf_counter() - first
    result["files"] = files
    queries = {
        "count_s": "SELECT count(*) FROM lake",
        "label_filter_s": "SELECT count(*) FROM lake WHERE label = 'd00007'",
        "preview_s": "SELECT path, m(image) FROM lake LIMIT 20",
        "top_n_s": "SELECT path, m(image) FROM lake ORDER BY path DESC LIMIT 20",
    }
    for key, query in queries.items():
        result[key] = _best(lambda: spark.sql(query).collect(), reps)
    folder = sorted(p for p in lake.iterdir() if p.is_dir())[3]
    added = [folder / f"added_{i}.jpg" for i in range(5)]
    originals = sorted(folder.glob("*.jpg"))[:3]
    moved = [lake / f".deleted_{p.name}" for p in originals]
    for source, target in zip(sorted(folder.glob("*.jpg"))[:5], added):
        shutil.copy(source, target)
    for source, target in zip(originals, moved):
        source.rename(target)  # deleted from the view (hidden names are not listed)
    try:
        refresh = time.perf_counter()
        after = spark.sql("SELECT count(*) AS n FROM lake").first().n
        result["refresh_s"] = time.perf_counter() - refresh
        assert after == files + 2, (after, files)
    finally:
        for path in added:
            path.unlink()
        for source, target in zip(originals, moved):
            target.rename(source)
    if scan:
        result.update(full_scan(spark, lake, model, files, reps))
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.gc()
    time.sleep(1)
    jvm.java.lang.System.gc()
    memory = jvm.java.lang.management.ManagementFactory.getMemoryMXBean()
    result["driver_heap_mb"] = memory.getHeapMemoryUsage().getUsed() / 2 ** 20
    result["driver_heap_max_mb"] = memory.getHeapMemoryUsage().getMax() / 2 ** 20
    spark.stop()
    return result


_RAW_MODEL: list = []  # in each process of the raw loop's pool: loaded once, as a worker's


def _load_raw_model(model_file: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    model = keras.saving.load_model(model_file)
    model.predict_on_batch(np.zeros((BATCH, *SIZE, 3), dtype=np.float32))  # traced
    _RAW_MODEL.append(model)


def _raw_part(folders: list[str]) -> int:
    """Keras's own loop (``load_img``, ``img_to_array``, ``preprocess_input``,
    ``predict_on_batch``) over the images of ``folders``: the answers sql_dl gives."""
    import keras
    from keras.applications.imagenet_utils import preprocess_input

    model = _RAW_MODEL[0]
    files = [os.path.join(f, name) for f in folders for name in sorted(os.listdir(f))
             if not name.startswith(".")]
    for start in range(0, len(files), BATCH):
        batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(f, target_size=SIZE))
                          for f in files[start:start + BATCH]])
        model.predict_on_batch(preprocess_input(batch, mode="tf"))
    return len(files)


def full_scan(spark, lake: Path, model: Path, files: int, reps: int) -> dict:
    """A full scan's images per second and the raw loop's, alternating (best of ``reps``
    each): the raw loop is Keras's, on the same files in batches of ``BATCH``, in one process
    per core, each with the model loaded and traced first."""
    folders = sorted(str(p) for p in lake.iterdir() if p.is_dir())
    cores = os.cpu_count() or 1
    parts = [folders[i::cores] for i in range(cores)]
    labels = ", ".join(f"'{Path(f).name}'" for f in folders[:2])

    def scan(where: str = "") -> None:
        spark.sql(f"SELECT m(image) FROM lake {where}").write.format("noop").mode(
            "overwrite").save()

    scan_runs, raw_runs = [], []
    with ProcessPoolExecutor(cores, mp_context=_SPAWN, initializer=_load_raw_model,
                             initargs=(str(model),)) as pool:
        list(pool.map(_raw_part, [folders[:1]] * cores))
        scan(f"WHERE label IN ({labels})")  # warm: the workers' models, the JVM's code
        for _ in range(reps):
            started = time.perf_counter()
            list(pool.map(_raw_part, parts))
            raw_runs.append(files / (time.perf_counter() - started))
            started = time.perf_counter()
            scan()
            scan_runs.append(files / (time.perf_counter() - started))
    return {"scan_img_s": max(scan_runs), "raw_img_s": max(raw_runs),
            "scan_runs": [round(r) for r in scan_runs], "raw_runs": [round(r) for r in raw_runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--root", default="/tmp/sql_dl-scale")
    parser.add_argument("--scan-sizes", default="10000,100000,1000000",
                        help="the sizes whose full scan is measured against the raw loop")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: lake,model,home,reps,scan
    args = parser.parse_args()
    if args.one:
        lake, model, home, reps, scan = args.one.split(",")
        print(json.dumps(measure(Path(lake), Path(model), Path(home), int(reps), scan == "1")))
        return
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    model = make_model(root / "tiny64.keras")
    sizes = [int(s) for s in args.sizes.split(",")]
    scan_sizes = {int(s) for s in args.scan_sizes.split(",") if s}
    rows = []
    for size in sizes:
        lake = make_lake(root, size)
        home = root / f"home-{size}"
        shutil.rmtree(home, ignore_errors=True)
        figures = {}
        for run in ("first", "restart"):
            child = subprocess.run(
                [sys.executable, __file__, "--one",
                 f"{lake},{model},{home},{args.reps},{int(run == 'first' and size in scan_sizes)}"],
                capture_output=True, text=True)
            if child.returncode != 0:
                sys.exit(f"size {size}: {child.stderr[-3000:]}")
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            figures.update({k if run == "first" else f"restart_{k}": v
                            for k, v in measured.items()})
        rows.append((size, figures))
        print(json.dumps({"size": size, **figures}), flush=True)
    print("\n| | " + " | ".join(f"{s:,} files" for s, _ in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for key, label in [("bootstrap_s", "`sql_dl.session` + bootstrap (s)"),
                       ("first_count_s", "first `count(*)`: the catalog built (s)"),
                       ("restart_bootstrap_s", "restart: session + bootstrap (s)"),
                       ("restart_first_count_s", "restart: first `count(*)` (s)"),
                       ("count_s", "`count(*)` (s)"), ("label_filter_s", "label filter (s)"),
                       ("preview_s", "`LIMIT 20` with the model (s)"),
                       ("top_n_s", "`ORDER BY path DESC LIMIT 20` with the model (s)"),
                       ("refresh_s", "5 added, 3 deleted: next `count(*)` (s)"),
                       ("driver_heap_mb", "driver heap in use after GC (MB)")]:
        print(f"| {label} | " + " | ".join(
            f"{f.get(key, float('nan')):.2f}" if key.endswith("_s") else
            f"{f.get(key, float('nan')):.0f}" for _, f in rows) + " |")
    print()
    for size, figures in rows:
        if "scan_img_s" in figures:
            print(f"full scan of {size:,}: {figures['scan_img_s']:.0f} img/s; raw loop, one "
                  f"process per core: {figures['raw_img_s']:.0f} img/s; ratio "
                  f"{figures['scan_img_s'] / figures['raw_img_s']:.2f}")


if __name__ == "__main__":
    main()
