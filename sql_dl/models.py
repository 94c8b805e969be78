"""Model loading: on the driver, check every model against its manifest entry and stage it
for the executors; on the executors, load a staged file into a ready-to-call model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sql_dl.errors import ModelLoadError
from sql_dl.manifest import APPLICATIONS, Manifest, ModelSpec, PreprocessorSpec

__all__ = ["ModelPlan", "cache_dir", "load_keras_model", "plan_model", "stage", "staged_name", "unpack"]

logger = logging.getLogger(__name__)

_IMAGENET_CLASS_INDEX = "imagenet_class_index.json"


@dataclass(frozen=True)
class ModelPlan:
    """Everything an executor needs to run one model; small and picklable (no model inside)."""

    name: str
    file: str  # local path on the driver, staged by name for the executors
    staged_name: str
    input: str
    input_shape: tuple[int, ...]
    output_size: int
    features_layer: str
    features_size: int
    preprocessor: PreprocessorSpec | None
    labels: tuple[tuple[str, str], ...] | None
    batch_size: int
    on_error: str
    source: str
    loader: Callable[[str], Any] | None = None  # URI -> the model's input, for tensor models
    sha256: str | None = None  # of ``file``, checked again on each executor (files only)
    trust_code: bool = False  # load Lambda layers and other code the model carries


def cache_dir() -> Path:
    """Where built application models are kept between runs (``$SQL_DL_CACHE``)."""
    return Path(os.environ.get("SQL_DL_CACHE", Path.home() / ".cache" / "sql_dl"))


def load_keras_model(path: str, trust_code: bool = False):
    """Loads a .keras or .h5 file, or a SavedModel directory, for inference.

    Without ``trust_code``, Keras's safe mode refuses models that carry Python code (a
    ``Lambda`` layer's bytecode) instead of running it.
    """
    import keras

    if os.path.isdir(path):
        return _saved_model(path)
    return keras.saving.load_model(path, compile=False, safe_mode=not trust_code)


def load_error(error: Exception) -> str:
    """What to do about a Keras loading error, beyond its message."""
    if "safe_mode" in str(error) or "Lambda" in str(error):
        return ("The model carries Python code (a Lambda layer), which sql_dl does not run "
                "unless its manifest entry says trust_code: true. Set it only for a model "
                "whose author you trust: loading it runs that code.")
    return ("Give a .keras or .h5 file (model.save) or a SavedModel directory "
            "(model.export).")


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, or of a directory's file names and contents, in hex."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root)).encode() if root.is_dir() else b"")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _saved_model(path: str):
    """A TensorFlow SavedModel as a Keras model with one input and one output."""
    import keras
    import tensorflow as tf

    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serve")  # model.export()
    except ValueError:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    function = layer.call_endpoint_fn
    specs = tf.nest.flatten(getattr(function, "input_signature", None)
                            or function.structured_input_signature)
    if len(specs) != 1:
        raise ValueError(f"the SavedModel takes {len(specs)} inputs; sql_dl runs models with "
                         "exactly one input")
    inputs = keras.Input(shape=specs[0].shape[1:], dtype=specs[0].dtype)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ValueError(f"the SavedModel has outputs {sorted(outputs)}; sql_dl runs models "
                             "with exactly one output")
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs)


def plan_model(spec: ModelSpec, manifest: Manifest, fetch: Callable[[str], str]) -> ModelPlan:
    """Loads a model on the driver and checks it against its manifest entry.

    Args:
        spec: the manifest entry.
        manifest: the manifest it belongs to, for its preprocessors and its name in messages.
        fetch: turns a path or URI into a local file path (copying remote files).

    Raises:
        ModelLoadError: the file is missing or unreadable, the weights or labels cannot be
            had, or the model does not fit the entry (input size, features layer, labels).
    """
    where = f"{manifest.source}: models.{spec.name}"
    started = time.monotonic()
    if spec.application:
        file = _build_application(spec, where, fetch)
        source = f"keras.applications.{spec.application}(weights={spec.weights})"
        sha256 = file_sha256(file)
    else:
        file = _fetch(fetch, spec.path, f"{where}.path")
        source = spec.path
        sha256 = _check_sha256(file, spec.sha256, f"{where}.path")
    try:
        model = load_keras_model(file, spec.trust_code)
    except Exception as e:  # Keras raises many types for unreadable files
        raise ModelLoadError(f"{where}.path: cannot load a Keras model from {spec.path!r}: "
                             f"{type(e).__name__}: {e}. {load_error(e)}") from e
    input_shape = _single_input_shape(model, where)
    preprocessor = _preprocessor(spec, manifest, input_shape, where)
    features_layer, features_size = _features(model, spec, where)
    output_size = _size(model.outputs[0].shape)
    labels = _labels(spec, output_size, where, fetch)
    plan = ModelPlan(
        name=spec.name, file=file, staged_name=staged_name(file, sha256), input=spec.input,
        input_shape=input_shape, output_size=output_size, features_layer=features_layer,
        features_size=features_size, preprocessor=preprocessor, labels=labels,
        batch_size=spec.batch_size, on_error=spec.on_error, source=source,
        sha256=None if os.path.isdir(file) else sha256, trust_code=spec.trust_code)
    logger.info("Checked model %s (%s) in %.1f s", spec.name, source, time.monotonic() - started)
    return plan


def _check_sha256(file: str, expected: str | None, where: str) -> str:
    """The file's SHA-256, checked against the manifest's ``sha256`` when one is given."""
    if expected is not None and os.path.isdir(file):
        raise ModelLoadError(f"{where}: sha256 checks a single file, and {file} is a directory "
                             "(a SavedModel); remove sha256 or give a .keras file")
    actual = file_sha256(file)
    if expected is not None and actual != expected:
        raise ModelLoadError(f"{where}: {file} does not have the SHA-256 the manifest gives: "
                             "the file changed or is not the one the entry means; nothing "
                             f"was loaded. Received: sha256={actual}, expected {expected}")
    return actual


def _fetch(fetch: Callable[[str], str], uri: str, where: str) -> str:
    try:
        path = fetch(uri)
    except Exception as e:  # Hadoop and OS errors alike
        raise ModelLoadError(f"{where}: cannot read {uri!r}: {e}") from e
    if not os.path.exists(path):
        raise ModelLoadError(f"{where}: no such file {uri!r}. Check the path in the manifest.")
    return path


def _size(shape: Any) -> int:
    return math.prod(int(d) for d in shape[1:])


def _single_input_shape(model: Any, where: str) -> tuple[int, ...]:
    if len(model.inputs) != 1:
        raise ModelLoadError(f"{where}: the model has {len(model.inputs)} inputs; sql_dl "
                             "runs models with exactly one input")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ModelLoadError(f"{where}: the model's input shape {shape} has unknown dimensions; "
                             "save the model with a fixed input shape")
    return tuple(int(d) for d in shape)


def _preprocessor(spec: ModelSpec, manifest: Manifest, input_shape: tuple[int, ...],
                  where: str) -> PreprocessorSpec | None:
    if spec.input == "tensor":
        return None
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ModelLoadError(f"{where}.input: the model's input shape {input_shape} is not an "
                             "RGB image (H, W, 3); use input: tensor for other inputs")
    if spec.preprocessor is not None:
        preprocessor = manifest.preprocessors[spec.preprocessor]
        if preprocessor.size is None:
            return dataclasses.replace(preprocessor, size=input_shape[:2])
        if tuple(preprocessor.size) != input_shape[:2]:
            raise ModelLoadError(
                f"{where}.preprocessor: preprocessor {spec.preprocessor!r} resizes to "
                f"{list(preprocessor.size)} but the model takes {list(input_shape[:2])} images; "
                f"set preprocessors.{spec.preprocessor}.size: {list(input_shape[:2])}")
        return preprocessor
    mode = APPLICATIONS[spec.application] if spec.application else "none"
    return PreprocessorSpec(name=f"{spec.name} (default)", size=input_shape[:2], mode=mode)


def _features(model: Any, spec: ModelSpec, where: str) -> tuple[str, int]:
    if os.path.isdir(spec.path or ""):
        if spec.features_layer is not None:
            raise ModelLoadError(f"{where}.features_layer: a SavedModel's layers are not "
                                 "visible; remove features_layer (<model>_features then gives "
                                 "the output), or save the model as a .keras file")
        return model.layers[-1].name, _size(model.outputs[0].shape)
    if spec.features_layer is None:
        if len(model.layers) < 2:
            raise ModelLoadError(f"{where}: the model has a single layer, so it has no layer "
                                 "before the output; set features_layer")
        layer = model.layers[-2]
    else:
        names = [layer.name for layer in model.layers]
        if spec.features_layer not in names:
            raise ModelLoadError(f"{where}.features_layer: the model has no layer "
                                 f"{spec.features_layer!r} (layers: {', '.join(names)})")
        layer = model.get_layer(spec.features_layer)
    return layer.name, _size(layer.output.shape)


def _labels(spec: ModelSpec, output_size: int, where: str, fetch: Callable[[str], str]
            ) -> tuple[tuple[str, str], ...] | None:
    if spec.labels is None:
        return None
    if spec.labels == "imagenet":
        labels = _imagenet_labels(where)
    else:
        path = _fetch(fetch, spec.labels, f"{where}.labels")
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
        labels = tuple((line, line) for line in lines if line)
    if len(labels) != output_size:
        raise ModelLoadError(f"{where}.labels: {len(labels)} labels for a model with "
                             f"{output_size} outputs; give one label per output, one per line "
                             f"(received: {spec.labels!r})")
    return labels


def _imagenet_labels(where: str) -> tuple[tuple[str, str], ...]:
    from keras.applications import imagenet_utils
    from keras.utils import get_file

    try:
        path = get_file(_IMAGENET_CLASS_INDEX, imagenet_utils.CLASS_INDEX_PATH,
                        cache_subdir="models", file_hash="c2c37ea517e94d9795004a39431a14cb")
    except Exception as e:  # urllib and Keras raise several types when offline
        raise ModelLoadError(
            f"{where}.labels: cannot get the ImageNet class index {_IMAGENET_CLASS_INDEX}: "
            f"it is not in Keras's cache ({_keras_models_dir()}) and downloading it failed "
            f"({e}). Copy the file there, or give labels: /path/to/labels.txt.") from e
    with open(path) as f:
        index = json.load(f)
    return tuple(tuple(index[str(i)]) for i in range(len(index)))


def _keras_models_dir() -> str:
    return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def _build_application(spec: ModelSpec, where: str, fetch: Callable[[str], str]) -> str:
    """Builds a keras.applications model once and keeps it as a .keras file in the cache."""
    weights = spec.weights
    if weights in ("imagenet", "none"):
        weights_id = weights
    else:
        weights = _fetch(fetch, weights, f"{where}.weights")
        weights_id = _check_sha256(weights, spec.sha256, f"{where}.weights")[:16]
    target = cache_dir() / "applications" / f"{spec.application}-{weights_id}.keras"
    if target.exists():
        return str(target)
    import keras

    constructor = getattr(keras.applications, spec.application)
    try:
        model = constructor(weights=None if weights == "none" else weights)
    except Exception as e:  # download (offline) and weight-file errors
        if weights == "imagenet":
            raise ModelLoadError(
                f"{where}.weights: cannot get the ImageNet weights of {spec.application}: they "
                f"are not in Keras's cache ({_keras_models_dir()}) and downloading them failed "
                f"({e}). Give weights: /path/to/file.h5 with the weights file instead.") from e
        raise ModelLoadError(f"{where}.weights: cannot load weights {spec.weights!r} into "
                             f"{spec.application}: {e}") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.keras")
    model.save(partial)
    os.replace(partial, target)
    return str(target)


def staged_name(path: str, sha256: str | None = None) -> str:
    """A name that changes with the content, so a changed model is shipped anew."""
    base = Path(path)
    digest = (sha256 or file_sha256(path))[:16]
    if base.is_dir():
        return f"{base.name}-{digest}.zip"
    return f"{base.stem}-{digest}{base.suffix}"


def stage(file: str, name: str, directory: Path) -> Path:
    """Copies a model under its staged ``name`` into ``directory`` (once); directories are zipped."""
    target = directory / name
    if target.exists():
        return target
    if os.path.isdir(file):
        archive = shutil.make_archive(str(target.with_suffix(f".{os.getpid()}")), "zip", file)
        os.replace(archive, target)
    else:
        shutil.copyfile(file, target)
    return target


def unpack(staged: str) -> str:
    """The model path to load from a staged file: a zipped SavedModel is extracted once."""
    if not staged.endswith(".zip"):
        return staged
    target = staged[:-len(".zip")]
    if not os.path.isdir(target):
        partial = f"{target}.{os.getpid()}"
        shutil.unpack_archive(staged, partial, "zip")
        try:
            os.replace(partial, target)
        except OSError:  # another worker of this executor finished first
            shutil.rmtree(partial, ignore_errors=True)
    return target
