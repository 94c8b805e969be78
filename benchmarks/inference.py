"""Image inference throughput: sql_dl against a raw Keras loop and Spark's predict_batch_udf.

One run measures, on the same JPEG files and the same model (random weights; decoding,
bilinear resize and the model's preprocessing included):

- raw Keras: load_img + preprocess_input, then predict_on_batch of 32, in this process;
- sql_dl SQL, cold (the first query after bootstrap, model loading included) and warm, and
  cold again in a new session bootstrapped with ``warm_up=True``;
- binaryFile -> a pandas decode UDF -> predict_batch_udf(batch_size=32), cold and warm;
- a row-at-a-time Python UDF with a module-level model cache, warm.

Prints images/s and the ratio to raw Keras; writes results.json and results.png.

    python benchmarks/inference.py --images 256 --model MobileNetV2 --master 'local[2]'
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
from typing import Iterator

import numpy as np
import pandas as pd

MODELS = {"MobileNetV2": ((224, 224), "tf"), "InceptionV3": ((299, 299), "tf")}
BATCH = 32


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


def raw_keras(model_file: Path, files: list[Path], size, mode) -> float:
    import keras

    model = keras.saving.load_model(model_file)
    started = time.perf_counter()
    for start in range(0, len(files), BATCH):
        batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(
            f, color_mode="rgb", target_size=size, interpolation="bilinear"))
            for f in files[start:start + BATCH]])
        model.predict_on_batch(keras.applications.imagenet_utils.preprocess_input(batch, mode=mode))
    return time.perf_counter() - started


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
    return files.select(predict(decode_udf("content")).alias("out"))


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
    figure, axes = plt.subplots(figsize=(8, 3.5))
    axes.barh(names[::-1], values[::-1], color="#4C72B0")
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
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    size, mode = MODELS[args.model]
    work = Path(tempfile.mkdtemp(prefix="sql_dl-bench-"))
    try:
        import keras

        import sql_dl

        print(f"Making {args.images} JPEGs and a {args.model} with random weights", file=sys.stderr)
        files = make_images(work / "images", args.images)
        model_file = work / f"{args.model}.keras"
        getattr(keras.applications, args.model)(weights=None).save(model_file)

        seconds = {"raw Keras loop": raw_keras(model_file, files, size, mode)}
        spark = sql_dl.session(master=args.master, conf={"spark.ui.showConsoleProgress": "false"},
                               home=work / "home")
        manifest = {
            "preprocessors": {"p": {"size": list(size), "mode": mode}},
            "models": {"m": {"path": str(model_file), "preprocessor": "p", "batch_size": BATCH}},
            "images": {"photos": {"path": str(work / "images")}}}
        sql_dl.bootstrap(spark, manifest)
        query = spark.sql("SELECT m(image) AS out FROM photos")
        seconds["sql_dl SQL, cold"] = timed(lambda: run_query(query))
        seconds["sql_dl SQL, warm"] = timed(lambda: run_query(query))
        spark.stop()
        spark = sql_dl.session(master=args.master, conf={"spark.ui.showConsoleProgress": "false"},
                               home=work / "home")
        sql_dl.bootstrap(spark, manifest, warm_up=True)
        query = spark.sql("SELECT m(image) AS out FROM photos")
        seconds["sql_dl SQL, cold after warm-up"] = timed(lambda: run_query(query))
        pipeline = predict_batch_udf_pipeline(spark, model_file, work / "images", size, mode)
        seconds["predict_batch_udf, cold"] = timed(lambda: run_query(pipeline))
        seconds["predict_batch_udf, warm"] = timed(lambda: run_query(pipeline))
        rows = row_udf_pipeline(spark, model_file, work / "images", size, mode)
        run_query(rows)
        seconds["row-at-a-time UDF, warm"] = timed(lambda: run_query(rows))
        spark.stop()

        rate = {name: args.images / s for name, s in seconds.items()}
        raw = rate["raw Keras loop"]
        results = {"model": args.model, "images": args.images, "master": args.master,
                   "cpus": os.cpu_count(), "images_per_second": rate,
                   "ratio_to_raw": {name: r / raw for name, r in rate.items()}}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        chart(results, args.out / "results.png")
        print(f"{'pipeline':<28}{'images/s':>10}{'x raw':>8}")
        for name, r in rate.items():
            print(f"{name:<28}{r:>10.1f}{r / raw:>8.2f}")
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
