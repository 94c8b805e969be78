"""``publish``: a trained model becomes a manifest entry, so SQL users get its functions.

The model file (and labels) go to ``models/`` beside the manifest; the entry is added to the
YAML with its comments and order kept. Nothing is written unless the new manifest validates
and the model fits its entry.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sql_dl.driver.models import check_offline
from sql_dl.errors import ManifestError, ModelLoadError
from sql_dl.manifest import check_manifest, is_local, local_path

__all__ = ["publish"]


def publish(model: Any, manifest: str | os.PathLike, name: str, *,
            preprocessor: str | Mapping[str, Any] | None = None,
            labels: str | os.PathLike | Sequence[str] | None = None,
            input: str = "image", path: str | os.PathLike | None = None,
            replace: bool = False) -> Path:
    """Writes ``model`` beside ``manifest`` and adds it as ``models.<name>``.

    After the next bootstrap (or SIGHUP to ``sql-dl serve``), SQL users get ``<name>(x)``,
    ``<name>_features(x)`` and ``<name>_top_k(x, k)``.

    Args:
        model: a Keras model, a model file or SavedModel directory, or a fitted
            `KerasImageFileTransformer` (its ``modelFile``).
        manifest: the YAML manifest to add to (created if missing).
        name: the entry's name, a SQL identifier.
        preprocessor: the name of a preprocessor of the manifest, or a new one's keys
            (``{"size": [H, W], "mode": "tf"}``), added as ``<name>_input``. Default: the
            model's input size, no preprocessing.
        labels: class names in output order, or a labels file (either is written to
            ``models/<name>.labels.txt``), or ``"imagenet"`` (or a URI, read from there).
        input: ``image`` or ``tensor``.
        path: where to write the model; default ``models/<name>.keras`` beside the manifest.
        replace: replace an existing entry of that name instead of failing.

    Returns:
        The model file written.

    Raises:
        ManifestError: the name is taken (without ``replace``) or the new entry is invalid.
        ModelLoadError: the model does not fit the entry (size, labels).
    """
    from ruamel.yaml import YAML  # lazy: only publishing edits YAML with its comments kept

    manifest = Path(manifest)
    yaml = YAML()
    document = yaml.load(manifest.read_text()) if manifest.exists() else None
    document = document if document is not None else {}
    models = document.setdefault("models", {})
    if name in models and not replace:
        raise ManifestError(f"{manifest}: models.{name}: an entry of that name exists; choose "
                            f"another name or replace it (replace=True, --replace)")
    base = manifest.resolve().parent
    target = Path(path).resolve() if path is not None else base / "models" / f"{name}.keras"
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = {p for p in target.parent.iterdir() if p.stem in (target.stem, f"{target.stem}.labels")}
    labels_file = None  # a local labels file, copied beside the model
    if isinstance(labels, (str, os.PathLike)) and str(labels) != "imagenet" and is_local(str(labels)):
        labels_file = Path(local_path(str(labels))).resolve()
        if not labels_file.is_file():
            raise ManifestError(f"{manifest}: models.{name}.labels: no such file; give a text "
                                f"file with one label per line. Received: labels={str(labels)!r}")
    written = [_write_model(model, target)]
    entry: dict[str, Any] = {"path": _relative(written[0], base)}
    if input != "image":
        entry["input"] = input
    if isinstance(preprocessor, Mapping):
        document.setdefault("preprocessors", {})[f"{name}_input"] = dict(preprocessor)
        entry["preprocessor"] = f"{name}_input"
    elif preprocessor is not None:
        entry["preprocessor"] = preprocessor
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        written.append(written[0].with_name(f"{written[0].stem}.labels.txt"))
        written[-1].write_text("".join(f"{label}\n" for label in labels))
        entry["labels"] = _relative(written[-1], base)
    elif labels_file is not None:  # copied beside the model: the two travel together
        written.append(written[0].with_name(f"{written[0].stem}.labels.txt"))
        if labels_file != written[-1].resolve():
            shutil.copyfile(labels_file, written[-1])
        entry["labels"] = _relative(written[-1], base)
    elif labels is not None:  # imagenet, or a URI: read from there at each bootstrap
        entry["labels"] = str(labels)
    models[name] = entry
    text = io.StringIO()
    yaml.dump(document, text)
    try:
        _check(manifest, text.getvalue(), name)
    except Exception:
        for created in written:
            if created not in existed:
                shutil.rmtree(created) if created.is_dir() else created.unlink()
        raise
    partial = manifest.with_name(f".{manifest.name}.{os.getpid()}")
    partial.write_text(text.getvalue())
    os.replace(partial, manifest)
    return written[0]


def _write_model(model: Any, target: Path) -> Path:
    """Saves a Keras model, or copies a model file or SavedModel directory, to ``target``
    (a directory's copy drops the ``.keras`` suffix)."""
    source = model.getOrDefault("modelFile") if hasattr(model, "getOrDefault") else None
    if source is None and isinstance(model, (str, os.PathLike)):
        source = model
    if source is None:  # a Keras model
        model.save(target)
        return target
    source = Path(source)
    if source.is_dir():
        target = target.with_suffix("")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        return target
    target = target.with_suffix(source.suffix)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    return target


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the manifest's folder when inside it, else absolute."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _check(manifest: Path, text: str, name: str) -> None:
    """Validates the new manifest text as if it were the file, and checks the new model."""
    loaded, problems = check_manifest(yaml.safe_load(text), as_file=manifest)
    if problems:
        raise ManifestError(problems)
    problems = check_offline(loaded, [name])
    if problems:
        raise ModelLoadError("\n".join(problems))
