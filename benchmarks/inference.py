"""Image inference throughput: sql_dl against a raw Keras loop and Spark's predict_batch_udf.

One run measures, on the same JPEG files and the same model (random weights, logits out;
decoding, bilinear resize and the model's preprocessing included), every pipeline's outputs
checked against the raw loop's:

- raw Keras: load_img + preprocess_input, then predict_on_batch of 32, in this process, the
  model loaded before the clock starts; once with the first batch paying for tracing Keras's
  predict step (the issue's "raw loop"), once with it traced beforehand;
- sql_dl SQL, cold (the first query after bootstrap, model loading included) and warm, and
  cold again in a new session bootstrapped with ``warm_up=True``;
- sql_dl SQL, warm, with ``engine: openvino`` in float32 and bfloat16 (interleaved with the
  Keras engine, best of five; their features compared with Keras's), when openvino is
  installed;
- binaryFile -> a pandas decode UDF -> predict_batch_udf(batch_size=32), cold and warm, and
  a row-at-a-time Python UDF with a module-level model cache, warm: in a session of their own;
- the ceilings: sql_dl's decoder alone (a process per core), and each engine alone on
  pre-decoded tensors ("compute only");
- the peers (benchmarks/peers.py, the ``bench`` extra): Ray Data and Daft, cold and second run.

With ``--camera 64`` it measures sql_dl (warm) on that many 12-megapixel JPEGs (4000x3000,
upscaled from the same photos) with ``decode: exact`` and ``decode: draft``, interleaved,
against the raw Keras loop (pre-traced) on the same files, and each decoder alone.

With ``--scaling 256,1024,4096`` it then measures raw Keras (pre-traced) and sql_dl (warm) on
each of those image counts, and the peak resident memory of the Python workers during each sql_dl
query (Linux: read from /proc, reset between queries).

Warm figures are the best of two runs; cold ones are single by nature. Prints images/s and
the ratio to raw Keras; writes results.json and results.png.

    python benchmarks/inference.py --images 256 --model MobileNetV2 --master 'local[2]'
    python benchmarks/inference.py --images 256 --scaling 256,1024,4096
    python benchmarks/inference.py --images 256 --camera 64
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

import peers

MODELS = {"MobileNetV2": ((224, 224), "tf"), "InceptionV3": ((299, 299), "tf")}
BATCH = 32


# Spark's examples/src/main/scripts/getGpusResources.sh, in short
DISCOVERY_SCRIPT = r"""#!/bin/bash
ADDRESSES=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, | sed 's/,/","/g')
echo "{\"name\": \"gpu\", \"addresses\": [\"$ADDRESSES\"]}"
"""


def gpu_conf(work: Path) -> dict[str, str]:
    """Spark settings that schedule this machine's GPUs, one task per GPU (as the manual's
    "GPU executors" says), found by a discovery script that asks nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        raise SystemExit("--device gpu: nvidia-smi is not installed, so there is no GPU to use")
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                          capture_output=True, text=True, check=True).stdout.split()
    script = work / "discover_gpus.sh"
    script.write_text(DISCOVERY_SCRIPT)
    script.chmod(0o755)
    return {"spark.worker.resource.gpu.amount": str(len(gpus)),
            "spark.worker.resource.gpu.discoveryScript": str(script),
            "spark.executor.resource.gpu.amount": str(len(gpus)),
            "spark.executor.resource.gpu.discoveryScript": str(script),
            "spark.task.resource.gpu.amount": "1"}


def installed(module: str) -> bool:
    """Whether an optional package (openvino, ray, daft) is installed."""
    return importlib.util.find_spec(module) is not None


def make_images(directory: Path, count: int, seed: int = 0) -> list[Path]:
    """JPEG crops, 240-640 px a side, of the photos scikit-image and scikit-learn ship."""
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(),
              skimage.data.rocket(), *load_sample_images().images]
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = (int(rng.integers(min(240, d), min(640, d) + 1)) for d in (h, w))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        path = directory / f"{i:05d}.jpg"
        Image.fromarray(photo[top:top + ch, left:left + cw]).save(path, quality=90)
        files.append(path)
    return files


def make_camera_images(directory: Path, count: int) -> list[Path]:
    """``count`` JPEGs of 4000x3000 (12 MP, what phones make): the shipped photos upscaled,
    8 distinct ones (mirrored too), hard-linked to make up the count."""
    from PIL import Image

    sources = make_images(directory / "sources", 4)
    distinct = []
    for i in range(min(8, count)):
        image = Image.open(sources[i % 4]).convert("RGB")
        if i >= 4:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = directory / f"camera-{i:05d}.jpg"
        image.resize((4000, 3000), Image.Resampling.LANCZOS).save(path, quality=90)
        distinct.append(path)
    files = list(distinct)
    for i in range(len(distinct), count):
        files.append(directory / f"camera-{i:05d}.jpg")
        os.link(distinct[i % len(distinct)], files[-1])
    shutil.rmtree(directory / "sources")
    return files


def camera(spark, count: int, work: Path, model_file: Path, size, mode) -> dict:
    """sql_dl (warm) on camera-sized JPEGs with exact and draft decoding, interleaved, the
    best of three each, and the raw Keras loop (pre-traced, exact) on the same files."""
    import sql_dl

    files = make_camera_images(work / "camera", count)
    engines = {"": {}}
    if installed("openvino"):
        engines[", OpenVINO bfloat16"] = {"engine": "openvino", "precision": "bfloat16"}
    models = {f"m_{decode}{i}": ({"path": str(model_file), "preprocessor": decode,
                                 "batch_size": BATCH, **engine}, f"decode: {decode}{label}")
              for i, (label, engine) in enumerate(engines.items())
              for decode in ("exact", "draft")}
    sql_dl.bootstrap(spark, {
        "preprocessors": {"exact": {"size": list(size), "mode": mode},
                          "draft": {"size": list(size), "mode": mode, "decode": "draft"}},
        "models": {name: entry for name, (entry, _) in models.items()},
        "images": {"camera": {"path": str(work / "camera")}},
        "cache": {"predictions": False}}, warm_up=True)
    seconds = {name: [] for name in models}
    for _ in range(3):  # interleaved: the machine's noise hits all alike
        for name in models:
            query = spark.sql(f"SELECT {name}(image) AS out FROM camera")
            seconds[name].append(timed(lambda: run_query(query)))
    results = {"images": count, "raw Keras loop, pre-traced":
               count / raw_keras(model_file, files, size, mode, traced=True)}
    for name, (_, label) in models.items():
        results[f"sql_dl SQL, warm, {label}"] = count / min(seconds[name])
    for decode in ("exact", "draft"):
        results[f"decode only, {decode} (a process per core)"] = count / best_of(
            2, lambda: decode_only(files, size, mode, decode))
    print("camera JPEGs: " + ", ".join(f"{k} {v:.1f}/s" for k, v in results.items()
                                       if k != "images"), file=sys.stderr)
    return results


def openvino_engines(spark, manifest: dict) -> tuple[dict, dict, dict]:
    """Seconds of warm sql_dl queries with the Keras engine and OpenVINO in float32 and
    bfloat16 (interleaved, best of five), how far OpenVINO's features are from Keras's
    (relative L2 over all images), and the OpenVINO outputs by file name."""
    import sql_dl

    model = manifest["models"]["m"]
    sql_dl.bootstrap(spark, {**manifest, "models": {
        "m": model, "m_f32": {**model, "engine": "openvino"},
        "m_bf16": {**model, "engine": "openvino", "precision": "bfloat16"}}}, warm_up=True)
    names = {"m": "sql_dl SQL, warm (Keras engine, same session)",
             "m_f32": "sql_dl SQL, warm, OpenVINO float32",
             "m_bf16": "sql_dl SQL, warm, OpenVINO bfloat16"}
    seconds = {label: [] for label in names.values()}
    for _ in range(5):  # the JVM's and the workers' first queries are still warming up
        for name, label in names.items():
            query = spark.sql(f"SELECT {name}(image) AS out FROM photos")
            seconds[label].append(timed(lambda: run_query(query)))
    rows = spark.sql("SELECT m_features(image) AS k, m_f32_features(image) AS f, "
                     "m_bf16_features(image) AS b FROM photos").collect()
    keras_features = np.array([r.k for r in rows])
    errors = {f"OpenVINO {kind} features, relative L2 to Keras's": float(
        np.linalg.norm(np.array([r[column] for r in rows]) - keras_features)
        / np.linalg.norm(keras_features)) for kind, column in (("float32", "f"), ("bfloat16", "b"))}
    print(", ".join(f"{k}: {v:.2e}" for k, v in errors.items()), file=sys.stderr)
    outputs = {f"sql_dl SQL, OpenVINO {kind}": sql_outputs(spark, name)
               for kind, name in (("float32", "m_f32"), ("bfloat16", "m_bf16"))}
    return {label: min(times) for label, times in seconds.items()}, errors, outputs


def outputs_by_name(frame) -> dict:
    """A frame's ``out`` column by the file name of its ``path``."""
    return {Path(r.path).name: np.array(r.out) for r in frame.collect()}


def sql_outputs(spark, function: str) -> dict:
    """A model function's outputs on the ``photos`` view, by file name."""
    return outputs_by_name(spark.sql(f"SELECT path, {function}(image) AS out FROM photos"))


def raw_keras(model_file: Path, files: list[Path], size, mode, traced: bool = False,
              outputs: dict | None = None) -> float:
    """Seconds for the loop; the model is loaded before the clock starts and, if ``traced``,
    its predict step is traced too (otherwise the first batch pays for it). ``outputs``, if
    given, receives the model's output per file name."""
    import keras

    model = keras.saving.load_model(model_file)
    if traced:
        model.predict_on_batch(np.zeros((BATCH, *size, 3), dtype=np.float32))
    started = time.perf_counter()
    for start in range(0, len(files), BATCH):
        batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(
            f, color_mode="rgb", target_size=size, interpolation="bilinear"))
            for f in files[start:start + BATCH]])
        out = model.predict_on_batch(keras.applications.imagenet_utils.preprocess_input(
            batch, mode=mode))
        if outputs is not None:
            outputs.update(zip((f.name for f in files[start:start + BATCH]), np.asarray(out)))
    return time.perf_counter() - started


def _decode(files: list[Path], size, mode, decode: str) -> int:
    from sql_dl.executor.images import apply_mode, load_rgb

    for file in files:
        apply_mode(load_rgb(str(file), size, "bilinear", decode=decode)[None], mode)
    return len(files)


def decode_only(files: list[Path], size, mode, decode: str = "exact") -> float:
    """Seconds for sql_dl's decoder (and the model's preprocessing) alone on ``files``, in one
    process per core: the decode ceiling of this machine."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    cores = os.cpu_count() or 1
    run = partial(_decode, size=size, mode=mode, decode=decode)
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
        list(pool.map(run, [files[:1]] * cores))  # the processes started and sql_dl imported
        started = time.perf_counter()
        assert sum(pool.map(run, [files[i::cores] for i in range(cores)])) == len(files)
        return time.perf_counter() - started


def compute_only(model_file: Path, files: list[Path], size, mode) -> dict:
    """Seconds for the model alone on pre-decoded tensors, in batches of 32 on every core, with
    Keras (pre-traced) and, when installed, OpenVINO in float32 and bfloat16 (compiled as
    sql_dl's workers compile it): the compute ceiling of each engine."""
    import hashlib

    import keras

    from sql_dl.executor.images import apply_mode, load_rgb

    tensors = apply_mode(np.stack([load_rgb(str(f), size, "bilinear") for f in files]), mode)
    batches = [tensors[i:i + BATCH] for i in range(0, len(tensors), BATCH)]
    model = keras.saving.load_model(model_file)
    model.predict_on_batch(batches[0])
    runners = {"compute only, Keras (pre-decoded tensors)": model.predict_on_batch}
    if installed("openvino"):
        from sql_dl.executor.engines import OpenVinoModel, convert_to_openvino

        converted = convert_to_openvino(model, model.layers[-2].name, hashlib.sha256(
            model_file.read_bytes()).hexdigest(), "benchmark")
        for precision in ("float32", "bfloat16"):
            engine = OpenVinoModel(converted, precision, model.layers[-2].name,
                                   os.cpu_count() or 1)
            engine.predict(batches[0])
            runners[f"compute only, OpenVINO {precision}"] = engine.predict
    seconds = {}
    for name, run in runners.items():
        seconds[name] = best_of(2, lambda: timed(lambda: [run(b) for b in batches]))
    return seconds


def difference(outputs: dict, reference: dict) -> float:
    """The largest absolute difference between two sets of outputs by file name, over the
    largest reference value; inf when they are not of the same files."""
    if outputs.keys() != reference.keys():
        return float("inf")
    names = sorted(reference)
    ours = np.stack([np.ravel(outputs[n]) for n in names])
    theirs = np.stack([np.ravel(reference[n]) for n in names])
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def python_workers() -> list[Path]:
    """The /proc entries of PySpark's Python daemon and the workers it forked."""
    workers = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"pyspark.daemon" in (entry / "cmdline").read_bytes():
                workers.append(entry)
        except OSError:  # the process ended
            pass
    return workers


def reset_peak_memory() -> None:
    for worker in python_workers():
        try:
            (worker / "clear_refs").write_text("5")  # resets VmHWM to the current RSS
        except OSError:
            pass


def worker_memory_mb(field: str) -> float:
    """The largest ``VmRSS`` (resident now) or ``VmHWM`` (peak) among the Python workers, MiB."""
    sizes = [0.0]
    for worker in python_workers():
        try:
            for line in (worker / "status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    return max(sizes)


def scaling(spark, counts: list[int], work: Path, model_file: Path, manifest: dict, size, mode
            ) -> dict:
    """Raw Keras and sql_dl (warm) throughput (the better of two runs each), and worker
    memory, per image count.

    ``spark`` is a fresh session whose workers have run nothing but sql_dl's warm-up, so
    their memory is TensorFlow, the model and the batches in flight.
    """
    import sql_dl

    files = make_images(work / "scaling", max(counts))
    results = {}
    for count in counts:
        folder = work / f"scaling-{count}"
        folder.mkdir()
        for file in files[:count]:
            os.link(file, folder / file.name)
        sql_dl.bootstrap(spark, {**manifest, "images": {"photos": {"path": str(folder)}}})
        query = spark.sql("SELECT m(image) AS out FROM photos")
        reset_peak_memory()
        before = worker_memory_mb("VmRSS")
        seconds = best_of(2, lambda: timed(lambda: run_query(query)))
        raw = count / best_of(2, lambda: raw_keras(model_file, files[:count], size, mode,
                                                   traced=True))
        results[count] = {"raw Keras loop": raw, "sql_dl SQL, warm": count / seconds,
                          "worker MiB before": before, "worker peak MiB": worker_memory_mb("VmHWM")}
        print(f"{count} images: raw {raw:.1f}/s, sql_dl {count / seconds:.1f}/s, worker "
              f"{before:.0f} MiB before, {results[count]['worker peak MiB']:.0f} MiB peak",
              file=sys.stderr)
    return results


def best_of(runs: int, measure) -> float:
    """The shortest of ``runs`` measurements (seconds): the least disturbed by the machine."""
    return min(measure() for _ in range(runs))


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_query(frame) -> None:
    frame.write.format("noop").mode("overwrite").save()


def predict_batch_udf_pipeline(spark, model_file: Path, image_dir: Path, size, mode):
    """What users glue together by hand today."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, FloatType

    def decode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import io

        import keras
        from PIL import Image

        for batch in batches:
            arrays = []
            for data in batch:
                image = Image.open(io.BytesIO(data)).convert("RGB").resize(size[::-1], Image.BILINEAR)
                x = np.asarray(image, dtype=np.float32)[None]
                arrays.append(keras.applications.imagenet_utils.preprocess_input(x, mode=mode)
                              .reshape(-1))
            yield pd.Series(arrays)

    def make_predict_fn():
        import keras

        model = keras.saving.load_model(str(model_file))
        return lambda x: model.predict_on_batch(x)

    decode_udf = pandas_udf(decode, ArrayType(FloatType()))
    predict = predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()),
                                batch_size=BATCH, input_tensor_shapes=[[*size, 3]])
    files = spark.read.format("binaryFile").load(str(image_dir))
    return files.select("path", predict(decode_udf("content")).alias("out"))


def row_udf_pipeline(spark, model_file: Path, image_dir: Path, size, mode):
    """A row-at-a-time Python UDF with a module-level model cache."""
    from pyspark.sql.functions import udf
    from pyspark.sql.types import ArrayType, FloatType

    model_path = str(model_file)

    def predict_one(data):
        import io

        import builtins

        import keras
        from PIL import Image

        cache = builtins.__dict__.setdefault("_bench_models", {})
        if model_path not in cache:
            cache[model_path] = keras.saving.load_model(model_path)
        image = Image.open(io.BytesIO(data)).convert("RGB").resize(size[::-1], Image.BILINEAR)
        x = keras.applications.imagenet_utils.preprocess_input(
            np.asarray(image, dtype=np.float32)[None], mode=mode)
        return cache[model_path].predict_on_batch(x)[0].astype(float).tolist()

    files = spark.read.format("binaryFile").load(str(image_dir))
    return files.select(udf(predict_one, ArrayType(FloatType()))("content").alias("out"))


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["images_per_second"])
    values = [results["images_per_second"][n] for n in names]
    figure, axes = plt.subplots(figsize=(9, 1 + 0.3 * len(names)))
    colors = ["#AAAAAA" if n.startswith(("decode only", "compute only")) else  # ceilings
              "#C44E52" if n.startswith("sql_dl") else "#4C72B0" for n in names]
    axes.barh(names[::-1], values[::-1], color=colors[::-1])
    for y, value in enumerate(values[::-1]):
        axes.text(value, y, f" {value:.1f}", va="center")
    axes.set_xlabel("images / s (higher is better)")
    axes.set_title(f"{results['model']}, {results['images']} JPEGs, {results['master']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", choices=sorted(MODELS), default="MobileNetV2")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--scaling", type=lambda v: [int(c) for c in v.split(",")], default=[],
                        help="comma-separated image counts for the scaling and memory run")
    parser.add_argument("--camera", type=int, default=0,
                        help="camera-sized JPEGs for the exact vs draft decoding run")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="gpu: Spark schedules the machine's GPUs (nvidia-smi), one task "
                             "per GPU, on a local-cluster master unless --master is given; "
                             "the raw loop runs on TensorFlow's first GPU")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size, mode = MODELS[args.model]
    work = Path(tempfile.mkdtemp(prefix="sql_dl-bench-"))
    os.environ["SQL_DL_CACHE"] = str(work / "cache")  # OpenVINO conversions of this run's model
    conf = {"spark.ui.showConsoleProgress": "false"}
    if args.device == "gpu":
        conf.update(gpu_conf(work))
        if args.master == "local[2]":
            args.master = f"local-cluster[1,{os.cpu_count()},4096]"
    try:
        import keras

        import sql_dl

        print(f"Making {args.images} JPEGs and a {args.model} with random weights", file=sys.stderr)
        files = make_images(work / "images", args.images)
        model_file = work / f"{args.model}.keras"
        # logits out: a random-weight model's softmax is too flat to compare outputs by
        getattr(keras.applications, args.model)(weights=None, classifier_activation=None).save(
            model_file)

        reference = {}  # the raw loop's outputs, which every pipeline's are checked against
        seconds = {"raw Keras loop": best_of(2, lambda: raw_keras(model_file, files, size, mode)),
                   "raw Keras loop, pre-traced": best_of(2, lambda: raw_keras(
                       model_file, files, size, mode, traced=True, outputs=reference)),
                   "decode only (sql_dl's decoder, a process per core)": best_of(
                       2, lambda: decode_only(files, size, mode)),
                   **compute_only(model_file, files, size, mode)}
        differences = {}
        spark = sql_dl.session(master=args.master, conf=conf,
                               home=work / "home")
        manifest = {
            "preprocessors": {"p": {"size": list(size), "mode": mode}},
            "models": {"m": {"path": str(model_file), "preprocessor": "p", "batch_size": BATCH}},
            "images": {"photos": {"path": str(work / "images")}},
            "cache": {"predictions": False}}  # model throughput (benchmarks/cache.py: the cache)
        sql_dl.bootstrap(spark, manifest)
        query = spark.sql("SELECT m(image) AS out FROM photos")
        seconds["sql_dl SQL, cold"] = timed(lambda: run_query(query))
        seconds["sql_dl SQL, warm"] = best_of(2, lambda: timed(lambda: run_query(query)))
        differences["sql_dl SQL"] = difference(sql_outputs(spark, "m"), reference)
        spark.stop()
        spark = sql_dl.session(master=args.master, conf=conf,
                               home=work / "home")
        sql_dl.bootstrap(spark, manifest, warm_up=True)
        query = spark.sql("SELECT m(image) AS out FROM photos")
        seconds["sql_dl SQL, cold after warm-up"] = timed(lambda: run_query(query))
        errors = {}
        if installed("openvino"):
            engines, errors, outputs = openvino_engines(spark, manifest)
            seconds.update(engines)
            differences.update({k: difference(v, reference) for k, v in outputs.items()})
        else:
            print("openvino is not installed: no OpenVINO rows (pip install -e '.[openvino]')",
                  file=sys.stderr)
        spark.stop()
        # A session of their own: Python workers sql_dl never touched.
        spark = sql_dl.session(master=args.master, home=work / "home",
                               conf=conf)
        pipeline = predict_batch_udf_pipeline(spark, model_file, work / "images", size, mode)
        seconds["predict_batch_udf, cold"] = timed(lambda: run_query(pipeline))
        seconds["predict_batch_udf, warm"] = best_of(2, lambda: timed(lambda: run_query(pipeline)))
        differences["predict_batch_udf"] = difference(outputs_by_name(pipeline), reference)
        rows = row_udf_pipeline(spark, model_file, work / "images", size, mode)
        run_query(rows)
        seconds["row-at-a-time UDF, warm"] = best_of(2, lambda: timed(lambda: run_query(rows)))
        spark.stop()
        for name, module, run in (("Ray Data", "ray", partial(peers.ray_data, work=work)),
                                  ("Daft", "daft", peers.daft_pipeline)):
            if not installed(module):
                print(f"{module} is not installed: no {name} rows (pip install -e '.[bench]')",
                      file=sys.stderr)
                continue
            runs = run(work / "images", model_file, size, mode)
            for label, (took, outputs) in zip(("cold", "second run"), runs):
                seconds[f"{name}, {label}"] = took
                differences[f"{name}, {label}"] = difference(outputs, reference)
        scaled = {}
        if args.scaling:
            spark = sql_dl.session(master=args.master, home=work / "home",
                                   conf=conf)
            sql_dl.bootstrap(spark, manifest, warm_up=True)
            scaled = scaling(spark, args.scaling, work, model_file, manifest, size, mode)
            spark.stop()

        cameras = {}
        if args.camera:
            spark = sql_dl.session(master=args.master, home=work / "home",
                                   conf=conf)
            cameras = camera(spark, args.camera, work, model_file, size, mode)
            spark.stop()

        rate = {name: args.images / s for name, s in seconds.items()}
        raw, traced = rate["raw Keras loop"], rate["raw Keras loop, pre-traced"]
        results = {"model": args.model, "images": args.images, "master": args.master,
                   "device": args.device,
                   "cpus": os.cpu_count(), "images_per_second": rate,
                   "ratio_to_raw": {name: r / raw for name, r in rate.items()},
                   "ratio_to_pre_traced_raw": {name: r / traced for name, r in rate.items()},
                   "scaling": scaled, "camera": cameras, "openvino_errors": errors,
                   "difference_to_raw": differences}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        chart(results, args.out / "results.png")
        print(f"{'pipeline':<48}{'images/s':>10}{'x raw':>8}{'x pre-traced':>14}")
        for name, r in rate.items():
            print(f"{name:<48}{r:>10.1f}{r / raw:>8.2f}{r / traced:>14.2f}")
        if scaled:
            print(f"\n{'images':>8}{'raw*/s':>9}{'sql_dl/s':>10}{'x raw':>7}{'vs first':>10}"
                  f"{'worker MiB before':>19}{'peak':>7}")
            first = scaled[args.scaling[0]]["sql_dl SQL, warm"]
            for count, row in scaled.items():
                ours = row["sql_dl SQL, warm"]
                print(f"{count:>8}{row['raw Keras loop']:>9.1f}{ours:>10.1f}"
                      f"{ours / row['raw Keras loop']:>7.2f}{ours / first - 1:>+10.0%}"
                      f"{row['worker MiB before']:>19.0f}{row['worker peak MiB']:>7.0f}")
        print("\nlargest difference to the raw loop's outputs (over their largest value):")
        for name, value in differences.items():
            print(f"  {name:<46}{value:.1e}")
        for name, error in errors.items():
            print(f"{name}: {error:.2e}")
        if cameras:
            raw_camera = cameras["raw Keras loop, pre-traced"]
            print(f"\n{cameras['images']} camera-sized JPEGs (4000x3000)")
            for name, r in cameras.items():
                if name != "images":
                    print(f"{name:<56}{r:>10.1f}{r / raw_camera:>8.2f} x raw, pre-traced")
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
