"""``sql-dl demo``: scikit-learn's digits as PNG folders, a small CNN, a manifest and SQL."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from sql_dl.cli.shell import SqlShell
from sql_dl.errors import SqlDlError
from sql_dl.executor.images import preprocess_batch
from sql_dl.manifest import PreprocessorSpec
from sql_dl.paths import DEMO_SQL

__all__ = ["prepare_demo", "render_digits", "run_demo", "train_digits_cnn"]

logger = logging.getLogger(__name__)

IMAGE_SIZE = (32, 32)


def render_digits(directory: Path) -> int:
    """Writes scikit-learn's 1,797 8×8 digits as 32×32 greyscale PNGs in ``<label>/`` folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    done = directory / ".complete"
    digits = load_digits()
    if done.exists():
        return len(digits.target)
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = directory / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8))
        image.resize(IMAGE_SIZE, Image.Resampling.NEAREST).save(folder / f"{i:04d}.png")
    done.touch()
    return len(digits.target)


def train_digits_cnn(images_dir: Path, model_file: Path, epochs: int = 6, seed: int = 0) -> float:
    """Trains a small CNN on the rendered digits and saves it; returns held-out accuracy.

    Training reads the PNGs through sql_dl's own preprocessing (``scale`` mode), so the
    model sees exactly what the SQL functions will feed it.
    """
    import keras

    files = sorted(images_dir.glob("*/*.png"))
    labels = np.array([int(f.parent.name) for f in files])
    spec = PreprocessorSpec(name="digits", size=IMAGE_SIZE, mode="scale")
    x, _ = preprocess_batch([str(f) for f in files], spec, "fail")
    order = np.random.default_rng(seed).permutation(len(files))
    split = int(len(files) * 0.8)
    train, test = order[:split], order[split:]

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(*IMAGE_SIZE, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="features"),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logger.info(
        "  epoch %d/%d: accuracy %.3f", epoch + 1, epochs, logs["accuracy"]))
    model.fit(x[train], labels[train], epochs=epochs, batch_size=32, verbose=0,
              callbacks=[progress])
    _, accuracy = model.evaluate(x[test], labels[test], verbose=0)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    model.save(model_file)
    return float(accuracy)


def demo_manifest() -> dict:
    """The demo's manifest; its paths are relative to the manifest file."""
    return {
        "preprocessors": {"digits_32": {"size": list(IMAGE_SIZE), "mode": "scale"}},
        "models": {"digits_cnn": {"path": "models/digits_cnn.keras",
                                  "preprocessor": "digits_32",
                                  "labels": "labels.txt",
                                  "features_layer": "features",
                                  "batch_size": 64}},
        "images": {"digits": {"path": "digits", "label": "parent_dir"}},
        "indexes": {"digits_like": {"view": "digits", "function": "digits_cnn_features",
                                    "metric": "cosine"}},
    }


def prepare_demo(directory: Path) -> Path:
    """Renders the digits and trains the CNN in ``directory`` (reusing earlier work), and
    writes the demo's manifest there; returns the manifest's path."""
    directory = Path(directory).resolve()
    logger.info("Rendering the digits to %s", directory / "digits")
    count = render_digits(directory / "digits")
    logger.info("  %d images in 10 folders", count)
    model_file = directory / "models" / "digits_cnn.keras"
    if model_file.exists():
        logger.info("Using the trained model %s (delete it to train again)", model_file)
    else:
        logger.info("Training a small CNN on 80% of the digits")
        accuracy = train_digits_cnn(directory / "digits", model_file)
        logger.info("  held-out accuracy %.3f, saved to %s", accuracy, model_file)
    (directory / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    manifest_file = directory / "models.yaml"
    manifest, kept = _with_demo_entries(manifest_file)
    manifest_file.write_text(yaml.safe_dump(manifest, sort_keys=False))
    if kept:
        logger.info("Kept the entries of %s the demo does not write: %s", manifest_file,
                    ", ".join(kept))
    return manifest_file


def _with_demo_entries(manifest_file: Path) -> tuple[dict, list[str]]:
    """The demo's manifest, with the entries another command added to ``manifest_file``
    (``sql-dl train --register``) kept, and the names of those kept.

    Raises:
        SqlDlError: the file is not a manifest (a YAML mapping of sections) to keep them of.
    """
    demo = demo_manifest()
    if not manifest_file.exists():
        return demo, []
    try:
        existing = yaml.safe_load(manifest_file.read_text())
    except yaml.YAMLError as e:
        existing = e
    if not isinstance(existing, dict) or not all(
            isinstance(existing.get(section), (dict, type(None))) for section in demo):
        raise SqlDlError(f"{manifest_file} is not a manifest the demo can keep your entries "
                         "of (a YAML mapping of sections); move it away to start the demo "
                         "over. Received: " + (type(existing).__name__ if not isinstance(
                             existing, Exception) else str(existing).splitlines()[0]))
    manifest = dict(existing)
    kept = [f"{section}.{name}" for section in demo for name in existing.get(section) or {}
            if name not in demo[section]]
    for section, entries in demo.items():
        manifest[section] = {**(existing.get(section) or {}), **entries}
    return manifest, kept


def run_demo(directory: Path, sql_file: Path | None, make_session: Callable) -> int:
    """Prepares the demo in ``directory`` (reusing earlier work) and runs its SQL."""
    started = time.monotonic()
    sql_file = sql_file or DEMO_SQL
    if not sql_file.exists():
        logger.error("no SQL script at %s; give one with --sql", sql_file)
        return 1
    manifest_file = prepare_demo(directory)
    logger.info("Starting Spark and bootstrapping %s", manifest_file)
    spark = make_session(str(manifest_file))
    try:
        logger.info("Running %s", sql_file)
        ok = SqlShell(spark, header=True, echo=True).run_script(sql_file.read_text())
    finally:
        spark.stop()
    logger.info("Demo finished in %.0f s", time.monotonic() - started)
    return 0 if ok else 1
