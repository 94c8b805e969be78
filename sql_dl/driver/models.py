"""Models on the driver: each manifest entry checked against its model file, weights and
labels, giving the `ModelPlan` executors run (`plan_model`); ``keras.applications`` models
built once into the cache; ``sql-dl validate``'s offline check (`check_offline`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, TypeVar

from sql_dl._version import __version__
from sql_dl.errors import ModelLoadError
from sql_dl.executor.engines import bf16_native, convert_to_openvino, engine_id
from sql_dl.executor.loading import load_error, load_keras_model
from sql_dl.manifest import Manifest, ModelSpec, PreprocessorSpec, is_local, local_path
from sql_dl.paths import cache_dir
from sql_dl.plans import ModelPlan
from sql_dl.rules import default_mode
from sql_dl.staging import file_sha256, staged_name

__all__ = ["check_offline", "import_keras_in_background", "plan_model"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_keras_import: threading.Thread | None = None


def import_keras_in_background() -> None:
    """Starts importing Keras (and TensorFlow: seconds) in a thread of its own, so that it
    overlaps the JVM's start; `plan_model`'s import then finds it done, or waits for it."""
    global _keras_import
    if _keras_import is None and "keras" not in sys.modules:
        _keras_import = threading.Thread(target=_import_keras, name="sql_dl-import-keras",
                                         daemon=True)
        _keras_import.start()


def _import_keras() -> None:
    try:  # below the JVM's start, which it would otherwise slow down on few cores
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux: a thread's priority is the process's
        pass
    try:
        importlib.import_module("keras")  # lazy: TensorFlow is heavy; in a thread of its own
    except Exception as e:  # noqa: BLE001 - plan_model imports it again and reports it
        logger.debug("importing keras in the background failed: %s", e)

_IMAGENET_CLASS_INDEX = "imagenet_class_index.json"


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
    problems: list[str] = []  # every problem of the entry, not the first alone

    def checked(check: Callable[..., _T], *args) -> _T | None:
        try:
            return check(*args)
        except ModelLoadError as e:
            problems.append(str(e))
            return None

    facts = _known_facts(file, sha256, spec)
    model = None
    if facts is None or spec.engine == "openvino":  # the converter needs the model itself
        model = _load(file, spec, where)
        features = checked(_features, model, spec, where) or (None, 0)
        facts = _Facts(_single_input_shape(model, where), *features,
                       _size(model.outputs[0].shape))
        if not problems:
            _keep_facts(file, sha256, spec, facts)
    input_shape, features_layer, features_size, output_size = facts
    preprocessor = checked(_preprocessor, spec, manifest, input_shape, where)
    labels = checked(_labels, spec, output_size, where, fetch)
    if problems:
        raise ModelLoadError("\n".join(problems))
    if spec.engine == "openvino":
        file, engine = _openvino(model, spec, features_layer, sha256, where)
        source = f"{source}; {engine}"
    plan = ModelPlan(
        name=spec.name, file=file, staged_name=staged_name(file, sha256), input=spec.input,
        input_shape=input_shape, output_size=output_size, features_layer=features_layer,
        features_size=features_size, preprocessor=preprocessor, labels=labels,
        batch_size=spec.batch_size, on_error=spec.on_error, source=source,
        sha256=None if os.path.isdir(file) else sha256, trust_code=spec.trust_code,
        cache_key=(_cache_key(sha256, input_shape, preprocessor, spec)
                   if manifest.cache.predictions and spec.cache and spec.input == "image"
                   else None),
        cache_size=manifest.cache.max_size, engine=spec.engine, precision=spec.precision)
    logger.debug("Checked model %s (%s) in %.1f s", spec.name, source, time.monotonic() - started)
    return plan


def _load(file: str, spec: ModelSpec, where: str) -> Any:
    try:
        return load_keras_model(file, spec.trust_code)
    except Exception as e:  # Keras raises many types for unreadable files
        raise ModelLoadError(f"{where}.path: cannot load a Keras model: {load_error(e)}. "
                             f"Received: path={spec.path!r}") from e


class _Facts(NamedTuple):
    """What planning needs from a model itself: found once per model file (and features
    layer), kept in the cache, so that a later bootstrap need not import TensorFlow."""

    input_shape: tuple[int, ...]
    features_layer: str
    features_size: int
    output_size: int


def _facts_file(file: str, sha256: str, spec: ModelSpec) -> Path:
    identity = json.dumps({"model": sha256, "directory": os.path.isdir(file),
                           "features_layer": spec.features_layer, "sql_dl": __version__,
                           "keras": _version("keras")}, sort_keys=True)
    return (cache_dir() / "model_facts"
            / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json")


def _known_facts(file: str, sha256: str, spec: ModelSpec) -> _Facts | None:
    try:
        data = json.loads(_facts_file(file, sha256, spec).read_text())
        return _Facts(tuple(data["input_shape"]), data["features_layer"],
                      int(data["features_size"]), int(data["output_size"]))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or damaged: load the model
        return None


def _keep_facts(file: str, sha256: str, spec: ModelSpec, facts: _Facts) -> None:
    target = _facts_file(file, sha256, spec)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(facts._asdict()))
        temporary.replace(target)  # whole or not at all
    except OSError as e:  # a read-only cache: the next bootstrap loads the model again
        logger.debug("cannot keep the facts of %s: %s", file, e)


def _version(distribution: str) -> str | None:
    """An installed distribution's version, without importing it (TensorFlow takes seconds)."""
    for name in (distribution, f"{distribution}-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _openvino(model: Any, spec: ModelSpec, features_layer: str, sha256: str,
              where: str) -> tuple[str, str]:
    """The model converted for the OpenVINO engine (cached), and the engine as
    ``sql_dl_models`` shows it; says once if bfloat16 runs at float32 speed on this CPU."""
    engine = f"engine openvino, {spec.precision}"
    if spec.precision == "bfloat16":
        if bf16_native():
            engine += " (native on the driver's CPU)"
        else:
            engine += " (float32 speed on the driver's CPU: no AVX512_BF16 or AMX)"
            logger.warning("%s: precision bfloat16: this CPU has neither AVX512_BF16 nor AMX, "
                           "so OpenVINO runs the model at float32 speed", where)
    return convert_to_openvino(model, features_layer, sha256, where), engine


def _cache_key(model_sha256: str, input_shape: tuple[int, ...],
               preprocessor: PreprocessorSpec, spec: ModelSpec) -> str:
    """What a model output depends on besides the image: the model file's content, the
    preprocessor (and the source of its function, if any) and the code that runs them."""
    function_source = None
    if preprocessor.function:
        module = importlib.util.find_spec(preprocessor.function.split(":")[0])
        if module is not None and module.origin and os.path.isfile(module.origin):
            function_source = file_sha256(module.origin)
    identity = {"model": model_sha256, "input_shape": input_shape,
                "preprocessor": dataclasses.asdict(preprocessor),
                "function_source": function_source, "sql_dl": __version__,
                "keras": _version("keras"), "tensorflow": _version("tensorflow"),
                "engine": engine_id(spec.engine, spec.precision)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def check_offline(manifest: Manifest, models: list[str] | None = None) -> list[str]:
    """Checks the manifest's models (or those named) against their files on this machine,
    as bootstrap would, without Spark; returns every problem found.

    Models with remote files are skipped (bootstrap checks them), saying so in the log.
    """
    problems = []
    for spec in manifest.models.values():
        if models is not None and spec.name not in models:
            continue
        if spec.preprocessor is not None and spec.preprocessor not in manifest.preprocessors:
            continue  # the preprocessor has problems of its own
        remote = [uri for uri in (spec.path, spec.weights, spec.labels)
                  if uri and uri not in ("imagenet", "none") and not is_local(uri)]
        if remote:
            logger.info("%s: models.%s: not checked here, remote files are checked at "
                        "bootstrap: %s", manifest.source, spec.name, ", ".join(remote))
            continue
        try:
            plan_model(spec, manifest, local_path)
        except ModelLoadError as e:  # one line per problem of the entry
            problems += str(e).splitlines()
    return problems


def _check_sha256(file: str, expected: str | None, where: str) -> str:
    """The file's SHA-256, checked against the manifest's ``sha256`` when one is given."""
    if expected is not None and os.path.isdir(file):
        raise ModelLoadError(f"{where}: sha256 checks a single file, and this is a directory "
                             f"(a SavedModel); remove sha256 or give a .keras file. "
                             f"Received: path={file!r}")
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
        raise ModelLoadError(f"{where}: cannot read the file: {e}; check the URI and that "
                             f"the driver can reach it. Received: {where.rsplit('.', 1)[-1]}"
                             f"={uri!r}") from e
    if not os.path.exists(path):
        raise ModelLoadError(f"{where}: no such file; check the path in the manifest. "
                             f"Received: {where.rsplit('.', 1)[-1]}={uri!r}")
    return path


def _size(shape: Any) -> int:
    return math.prod(int(d) for d in shape[1:])


def _single_input_shape(model: Any, where: str) -> tuple[int, ...]:
    if len(model.inputs) != 1:
        raise ModelLoadError(f"{where}: sql_dl runs models with exactly one input; give a "
                             f"model with one. Received: inputs={len(model.inputs)}")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ModelLoadError(f"{where}: the model's input shape has unknown dimensions; "
                             f"save the model with a fixed input shape. Received: shape={shape}")
    return tuple(int(d) for d in shape)


def _preprocessor(spec: ModelSpec, manifest: Manifest, input_shape: tuple[int, ...],
                  where: str) -> PreprocessorSpec | None:
    if spec.input == "tensor":
        return None
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ModelLoadError(f"{where}.input: the model's input shape {input_shape} is not an "
                             "RGB image (H, W, 3); use input: tensor for other inputs. "
                             f"Received: input={spec.input!r}")
    if spec.preprocessor is not None:
        preprocessor = manifest.preprocessors[spec.preprocessor]
        if preprocessor.size is None:
            return dataclasses.replace(preprocessor, size=input_shape[:2])
        if tuple(preprocessor.size) != input_shape[:2]:
            shared = sorted(m.name for m in manifest.models.values()
                            if m.preprocessor == spec.preprocessor and m.name != spec.name)
            advice = (f"set preprocessors.{spec.preprocessor}.size: {list(input_shape[:2])}"
                      if not shared else
                      f"give this model a preprocessor of its own with size "
                      f"{list(input_shape[:2])} ({spec.preprocessor!r} also serves "
                      f"{', '.join(shared)})")
            raise ModelLoadError(
                f"{where}.preprocessor: preprocessor {spec.preprocessor!r} resizes to "
                f"{list(preprocessor.size)} but the model takes {list(input_shape[:2])} images; "
                f"{advice}. Received: size={list(preprocessor.size)}")
        return preprocessor
    return PreprocessorSpec(name=f"{spec.name} (default)", size=input_shape[:2],
                            mode=default_mode(spec.application))


def _features(model: Any, spec: ModelSpec, where: str) -> tuple[str, int]:
    if os.path.isdir(spec.path or ""):
        if spec.features_layer is not None:
            raise ModelLoadError(f"{where}.features_layer: a SavedModel's layers are not "
                                 "visible; remove features_layer (<model>_features then gives "
                                 "the output), or save the model as a .keras file. "
                                 f"Received: features_layer={spec.features_layer!r}")
        return model.layers[-1].name, _size(model.outputs[0].shape)
    if spec.features_layer is None:  # one layer: <model>_features gives the output
        layer = model.layers[-2] if len(model.layers) > 1 else model.layers[-1]
    else:
        names = [layer.name for layer in model.layers]
        if spec.features_layer not in names:
            raise ModelLoadError(f"{where}.features_layer: the model has no such layer; give "
                                 f"one of {', '.join(names)}. "
                                 f"Received: features_layer={spec.features_layer!r}")
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
                             f"{output_size} outputs; give one label per output, one per line. "
                             f"Received: labels={spec.labels!r}")
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
            f"({e}). Copy the file there, or give labels: /path/to/labels.txt. "
            f"Received: labels='imagenet'") from e
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
                f"({e}). Give weights: /path/to/file.h5 with the weights file instead. "
                f"Received: weights='imagenet'") from e
        raise ModelLoadError(f"{where}.weights: cannot load the weights into "
                             f"{spec.application}: {e}; give a file saved by model.save_weights "
                             f"for this application. Received: weights={spec.weights!r}") from e
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.keras")
    model.save(partial)
    os.replace(partial, target)
    return str(target)
