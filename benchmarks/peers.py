"""The engines people pick instead of sql_dl, run the way their documentation shows for batch
image inference with a Keras model, on the same files and model as benchmarks/inference.py:

- Ray Data: ``read_binary_files`` (its read tasks at ``num_cpus=0``, so that on a small
  machine they cannot starve the actors of CPUs, and at most one per core at a time: unbounded,
  Ray started 32 worker processes for them and ran at less than half the speed) then
  ``map_batches`` with a pool of one actor per core, batches of 32, the object store capped;
- Daft: ``from_glob_path`` + ``download()`` then a ``@daft.cls`` batch method of batches of
  32, one process per core.

Both decode exactly as the raw Keras loop does (``load_img``, bilinear, ``preprocess_input``)
and give each worker one TensorFlow thread per core it holds. Neither keeps its workers between
queries: every run starts them and loads the model again, so each is measured cold (the first
run in the process) and on a second run.

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 32


def _predictor(model_file: Path, size, mode, threads: int):
    """A class that loads the model once and turns a list of JPEG bytes into its outputs,
    defined here so that cloudpickle ships it by value to Ray's and Daft's workers."""

    class Predictor:
        def __init__(self):
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            import keras

            self.keras = keras
            self.model = keras.saving.load_model(str(model_file))

        def predict(self, contents) -> np.ndarray:
            import io

            keras = self.keras
            batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(
                io.BytesIO(data), color_mode="rgb", target_size=size, interpolation="bilinear"))
                for data in contents])
            return np.asarray(self.model.predict_on_batch(
                keras.applications.imagenet_utils.preprocess_input(batch, mode=mode)))

    return Predictor


def ray_data(image_dir: Path, model_file: Path, size, mode, work: Path, runs: int = 2
             ) -> list[tuple[float, dict[str, np.ndarray]]]:
    """``runs`` runs of a Ray Data pipeline: (seconds, outputs by file name) each. Ray itself is
    started before the clock (``ray.init``) and stopped after."""
    import ray

    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, object_store_memory=512 * 2**20, include_dashboard=False,
             _temp_dir=str(work / "ray"), log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        base = _predictor(model_file, size, mode, threads=1)

        class RayPredictor(base):
            def __call__(self, batch: dict) -> dict:
                return {"path": batch["path"], "out": self.predict(batch["bytes"])}

        results = []
        for _ in range(runs):
            started = time.perf_counter()
            rows = (ray.data.read_binary_files(str(image_dir), include_paths=True, num_cpus=0,
                                              concurrency=cores)
                    .map_batches(RayPredictor, batch_size=BATCH, batch_format="numpy",
                                 compute=ray.data.ActorPoolStrategy(size=cores),
                                 num_cpus=1)
                    .take_all())
            results.append((time.perf_counter() - started,
                            {Path(r["path"]).name: np.asarray(r["out"]) for r in rows}))
            print(f"Ray Data: {len(rows)} images in {results[-1][0]:.1f} s", file=sys.stderr)
        return results
    finally:
        ray.shutdown()


def daft_pipeline(image_dir: Path, model_file: Path, size, mode, runs: int = 2
                  ) -> list[tuple[float, dict[str, np.ndarray]]]:
    """``runs`` runs of a Daft pipeline on its native (local) runner: (seconds, outputs by file
    name) each."""
    import daft

    cores = os.cpu_count() or 1
    base = _predictor(model_file, size, mode, threads=1)

    @daft.cls(use_process=True, max_concurrency=cores, cpus=1)
    class DaftPredictor(base):
        @daft.method.batch(return_dtype=daft.DataType.list(daft.DataType.float32()),
                           batch_size=BATCH)
        def __call__(self, contents: daft.Series):
            return list(self.predict(contents.to_pylist()))

    daft.set_runner_native()
    results = []
    for _ in range(runs):
        started = time.perf_counter()
        frame = daft.from_glob_path(str(image_dir / "*.jpg"))
        frame = frame.with_column("out", DaftPredictor()(daft.col("path").download()))
        rows = frame.select("path", "out").to_pydict()
        results.append((time.perf_counter() - started,
                        {Path(p).name: np.asarray(o, dtype=np.float32)
                         for p, o in zip(rows["path"], rows["out"])}))
        print(f"Daft: {len(rows['path'])} images in {results[-1][0]:.1f} s", file=sys.stderr)
    return results
