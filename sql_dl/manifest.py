"""Manifest parsing and validation: YAML (or a dict) in, frozen specs out.

Pure Python: nothing here imports Spark or TensorFlow, so ``sql-dl validate`` and the
tests of every rule run without either.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import yaml

from sql_dl.errors import ManifestError
from sql_dl.rules import (
    APPLICATIONS, DECODE_MODES, ENGINES, IMAGE_EXTENSIONS, INDEX_METRICS, INPUT_KINDS,
    INTERPOLATIONS,
    LABEL_SOURCES, MAX_PIXELS, ON_ERROR, PRECISIONS, PREPROCESS_MODES, RESERVED_NAMES,
    application_problem, byte_size, byte_size_problem, choice_problem, default_labels,
    duration_problem, duration_seconds, extensions_problem, max_pixels_problem, positive_int_problem, received,
    sample_ratio_problem, size_problem,
)

__all__ = [
    "APPLICATIONS",
    "AccessSpec",
    "CacheSpec",
    "ImageViewSpec",
    "IndexSpec",
    "Manifest",
    "ModelSpec",
    "PreprocessorSpec",
    "check_manifest",
    "load_manifest",
]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING = object()
_FUNCTION_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SECTIONS = ("preprocessors", "models", "images", "indexes", "cache", "access")
_ENTRY_SECTIONS = _SECTIONS[:4]
_PRINCIPAL = re.compile(r"^(group:)?[^\s:,][^,]*$")
GROUP_PREFIX = "group:"
DEFAULT_CACHE_SIZE = "1GB"
DEFAULT_MAX_FILE_SIZE = "100MB"
DEFAULT_IMAGES_PER_TASK = 4096


@dataclass(frozen=True)
class PreprocessorSpec:
    """How an encoded image becomes the float32 tensor a model receives.

    ``size`` None (never from a manifest) means the input size of the model it serves.
    """

    name: str
    size: tuple[int, int] | None
    mode: str = "none"
    interpolation: str = "bilinear"
    function: str | None = None
    max_pixels: int = MAX_PIXELS
    description: str | None = None
    decode: str = "exact"  # "draft": JPEGs decoded at a reduced scale (sql_dl.executor.images)


@dataclass(frozen=True)
class ModelSpec:
    """One ``models:`` entry; ``path`` and ``labels`` are absolute or URIs."""

    name: str
    path: str | None = None
    application: str | None = None
    weights: str | None = None
    input: str = "image"
    preprocessor: str | None = None
    labels: str | None = None
    features_layer: str | None = None
    batch_size: int = 32
    on_error: str = "null"
    trust_code: bool = False
    sha256: str | None = None
    description: str | None = None
    cache: bool = True  # whether its outputs go to the prediction cache (if that is on)
    engine: str = "keras"  # keras | openvino (converted at bootstrap, sql_dl.executor.engines)
    precision: str = "float32"  # float32 | bfloat16 (openvino only)

    @property
    def function_names(self) -> tuple[str, str, str]:
        return self.name, f"{self.name}_features", f"{self.name}_top_k"


@dataclass(frozen=True)
class ImageViewSpec:
    """One ``images:`` entry, exposed as a view over the files under ``path``."""

    name: str
    path: str
    recursive: bool = True
    label: str = "parent_dir"
    sample_ratio: float = 1.0
    glob: str | None = None
    # the file name extensions listed (lower case), or None for every file (the default is
    # IMAGE_EXTENSIONS without a glob, None with one: the glob then decides)
    extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS
    max_staleness: float = 0.0  # seconds a listing of the folder may be reused
    max_file_size: int = byte_size(DEFAULT_MAX_FILE_SIZE)  # bytes sql-dl serve reads by path
    images_per_task: int = DEFAULT_IMAGES_PER_TASK  # a full scan's task size (at least one per core)


@dataclass(frozen=True)
class IndexSpec:
    """One ``indexes:`` entry: the embedding of every image of ``view`` by ``function`` (a
    model's ``<m>_features`` or ``<m>``), searched nearest first by ``metric``; also the
    name of its SQL table function."""

    name: str
    view: str
    function: str
    model: str  # the model ``function`` belongs to
    features: bool  # whether ``function`` is the model's ``<m>_features``
    metric: str = "cosine"
    description: str | None = None


@dataclass(frozen=True)
class CacheSpec:
    """The ``cache:`` section: the prediction cache of every executor."""

    predictions: bool = True
    max_size: int = byte_size(DEFAULT_CACHE_SIZE)  # bytes per executor cache directory


@dataclass(frozen=True)
class AccessSpec:
    """The ``access:`` section: who administers ``sql-dl serve`` and who may use what.

    Names are canonical (trimmed, lower case), as the server compares them; ``group:NAME``
    is an LDAP group. An entry (model, preprocessor or image view) not in ``grants`` is open
    to every user.
    """

    admins: tuple[str, ...] = ()
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def groups(self) -> set[str]:
        """The ``group:NAME`` principals it names."""
        return {p for p in (*self.admins, *(p for ps in self.grants.values() for p in ps))
                if p.startswith(GROUP_PREFIX)}


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``source`` names where it came from, for messages."""

    source: str
    preprocessors: dict[str, PreprocessorSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    images: dict[str, ImageViewSpec] = field(default_factory=dict)
    indexes: dict[str, IndexSpec] = field(default_factory=dict)
    cache: CacheSpec = field(default_factory=CacheSpec)
    access: AccessSpec | None = None  # None: no access section

    def summary(self) -> str:
        """``2 preprocessors, 1 model, 1 image view``."""
        counts = ((len(self.preprocessors), "preprocessor"), (len(self.models), "model"),
                  (len(self.images), "image view"))
        text = ", ".join(f"{n} {noun}{'' if n == 1 else 's'}" for n, noun in counts)
        n = len(self.indexes)
        return f"{text}, {n} index{'' if n == 1 else 'es'}" if n else text


def load_manifest(manifest: str | os.PathLike | Mapping[str, Any]) -> Manifest:
    """Reads and validates a manifest.

    Args:
        manifest: a YAML file path, or a dict with the same structure. Relative paths
            inside a file are resolved against the file's directory; inside a dict,
            against the current directory.

    Returns:
        The validated `Manifest`.

    Raises:
        ManifestError: listing every problem found, each as
            ``<source>: <section>.<entry>.<key>: <what is wrong>. Received: <key>=<value>``.
    """
    loaded, problems = check_manifest(manifest)
    if problems:
        raise ManifestError(problems)
    return loaded


def check_manifest(manifest: str | os.PathLike | Mapping[str, Any], *,
                   as_file: str | os.PathLike | None = None) -> tuple[Manifest | None, list[str]]:
    """Validates a manifest without raising: returns the manifest of its valid entries (None
    when the file cannot be read at all) and every problem found.

    ``as_file``, for a dict, is the file it stands for: relative paths resolve against that
    file's folder and messages name it.
    """
    if isinstance(manifest, Mapping):
        if as_file is not None:
            return _Validator(str(as_file), Path(as_file).resolve().parent).validate(manifest)
        return _Validator("<manifest dict>", Path.cwd()).validate(manifest)
    path = Path(manifest)
    try:
        text = path.read_text()
    except OSError as e:
        return None, [f"{path}: cannot read the manifest: {e.strerror}; check the path. "
                      f"{received('manifest', str(path))}"]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return None, [f"{path}: not valid YAML; fix the syntax: {' '.join(str(e).split())}"]
    return _Validator(str(path), path.resolve().parent).validate(data if data is not None else {})


def is_local(uri: str) -> bool:
    """Whether ``uri`` is a path on this machine (no scheme, or ``file:``)."""
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # a Windows drive letter


def local_path(uri: str) -> str:
    return urlparse(uri).path if uri.startswith("file:") else uri


class _Validator:
    """Collects every problem of one manifest instead of stopping at the first."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, where: str, what: str, value: Any = _MISSING) -> None:
        """Records ``<source>: <where>: <what>. Received: <key>=<value>``."""
        ending = "" if value is _MISSING else f". {received(where.rsplit('.', 1)[-1], value)}"
        self.problems.append(f"{self.source}: {where}: {what}{ending}")

    def check(self, where: str, value: Any, problem: str | None, default: Any) -> Any:
        """``value`` if ``problem`` is None; otherwise records it and returns ``default``."""
        if problem is None:
            return value
        self.problem(where, problem, value)
        return default

    def validate(self, data: Any) -> tuple[Manifest | None, list[str]]:
        """The manifest of the entries without problems, and every problem."""
        if not isinstance(data, Mapping):
            return None, [f"{self.source}: the manifest must be a mapping with sections "
                          f"{', '.join(_SECTIONS)}. Received: {type(data).__name__}"]
        for key in data:
            if key not in _SECTIONS:
                self.problem(str(key), f"unknown section; the sections are {', '.join(_SECTIONS)}")
        sections = {name: self._section(data, name) for name in _ENTRY_SECTIONS}
        preprocessors = self._valid(sections["preprocessors"], self._preprocessor)
        models = self._valid(sections["models"],
                             lambda n, e: self._model(n, e, sections["preprocessors"]))
        images = self._valid(sections["images"], self._images)
        self._check_function_names(preprocessors, models)
        indexes = self._valid(sections["indexes"], lambda n, e: self._index(
            n, e, sections, preprocessors, models, images))
        entries = {**sections["preprocessors"], **sections["models"], **sections["images"]}
        return (Manifest(self.source, preprocessors, models, images, indexes, self._cache(data),
                         self._access(data, entries)),
                self.problems)

    def _index(self, name: str, entry: Mapping, sections: Mapping[str, Mapping],
               preprocessors: Mapping[str, PreprocessorSpec], models: Mapping[str, ModelSpec],
               images: Mapping[str, ImageViewSpec]) -> IndexSpec:
        where = f"indexes.{name}"
        self._check_keys(where, entry, ("view", "function", "metric", "description"))
        view, function = entry.get("view"), entry.get("function")
        if not isinstance(view, str) or view not in sections["images"]:
            self.problem(f"{where}.view", "must name an image view of this manifest: "
                         f"{', '.join(sections['images']) or '(none)'}", view)
        vectors = {}  # function name -> (model, features)
        for model in models.values():
            own, features, _ = model.function_names
            vectors[own.lower()] = (model.name, False)
            vectors[features.lower()] = (model.name, True)
        owner, features = vectors.get(str(function).lower(), (None, False))
        if owner is None:
            self.problem(f"{where}.function", self._not_vector(function, preprocessors, models)
                         + "; give a model's <model>_features (or <model>): "
                         + (", ".join(n for m in models.values() for n in m.function_names[1::-1])
                            or "(this manifest has no model)"), function)
        if owner is not None and models[owner].input != "image":
            self.problem(f"{where}.function", f"model {owner} takes tensors (input: "
                         f"{models[owner].input}), and an image view gives images; index a "
                         "model that takes images", function)
        clash = [f"{s}.{n}" for s in ("preprocessors", "models", "images")
                 for n in sections[s] if n.lower() == name.lower()]
        clash += [f"models.{m.name}" for m in models.values()
                  if name.lower() in {n.lower() for n in m.function_names}]
        if clash:
            self.problem(where, f"the name is taken by {clash[0]}; an index's table function "
                                "needs a name of its own")
        return IndexSpec(
            name=name, view=view if isinstance(view, str) else "",
            function=str(function), model=owner or "", features=features,
            metric=self._choice(f"{where}.metric", entry.get("metric"), INDEX_METRICS, "cosine"),
            description=self._description(where, entry))

    @staticmethod
    def _not_vector(function: Any, preprocessors: Mapping[str, PreprocessorSpec],
                    models: Mapping[str, ModelSpec]) -> str:
        """Why ``function`` cannot be an index's: what it returns instead of a vector."""
        name = str(function).lower()
        if any(name == m.function_names[2].lower() for m in models.values()):
            return f"{function} returns a model's best classes (ARRAY<STRUCT>), not a vector"
        if name in {p.lower() for p in preprocessors}:
            return f"{function} is a preprocessor: it returns an image's pixels, not a vector"
        if name in RESERVED_NAMES:
            return f"{function} is one of sql_dl's image functions: it returns no vector"
        return "no model of this manifest has this function"

    def _access(self, data: Mapping, entries: Mapping[str, Any]) -> AccessSpec | None:
        if "access" not in data:
            return None
        section = data.get("access") or {}
        if not isinstance(section, Mapping):
            self.problem("access", "must be a mapping of keys (admins, grants)", section)
            return AccessSpec()
        self._check_keys("access", section, ("admins", "grants"))
        admins = self._principals("access.admins", section.get("admins"))
        grants = section.get("grants") or {}
        if not isinstance(grants, Mapping):
            self.problem("access.grants", "must map model, preprocessor and image view names "
                                          "to lists of users and group:NAME", grants)
            grants = {}
        known = {str(name).lower(): name for name in entries}
        checked = {}
        for name, principals in grants.items():
            where = f"access.grants.{name}"
            if str(name).lower() not in known:
                self.problem(where, "no model, preprocessor or image view has this name; "
                                    f"the entries are {', '.join(sorted(map(str, entries))) or '(none)'}")
                continue
            checked[known[str(name).lower()]] = self._principals(where, principals)
        return AccessSpec(admins, checked)

    def _principals(self, where: str, value: Any) -> tuple[str, ...]:
        """A list of user names and ``group:NAME``, canonical (trimmed, lower case)."""
        if value is None:
            return ()
        if not isinstance(value, list) or not all(
                isinstance(v, str) and _PRINCIPAL.match(v.strip()) for v in value):
            self.problem(where, "must be a list of user names and group:NAME (an LDAP group), "
                                "e.g. [ops, group:ml-team]", value)
            return ()
        return tuple(dict.fromkeys(v.strip().lower() for v in value))

    def _cache(self, data: Mapping) -> CacheSpec:
        entry = data.get("cache")
        if isinstance(entry, bool) or entry is None:
            return CacheSpec(predictions=entry is not False)
        if not isinstance(entry, Mapping):
            self.problem("cache", "must be a mapping of keys (predictions, max_size), or false",
                         entry)
            return CacheSpec()
        self._check_keys("cache", entry, ("predictions", "max_size"))
        size = entry.get("max_size", DEFAULT_CACHE_SIZE)
        return CacheSpec(
            predictions=self._bool("cache.predictions", entry.get("predictions"), True),
            max_size=byte_size(self.check("cache.max_size", size, byte_size_problem(size),
                                          DEFAULT_CACHE_SIZE)))

    def _valid(self, entries: dict[str, Mapping], make) -> dict[str, Any]:
        """``make(name, entry)`` for each entry, keeping those that raised no problem."""
        specs = {}
        for name, entry in entries.items():
            before = len(self.problems)
            spec = make(name, entry)
            if len(self.problems) == before:
                specs[name] = spec
        return specs

    def _section(self, data: Mapping, name: str) -> dict[str, Mapping]:
        section = data.get(name) or {}
        if not isinstance(section, Mapping):
            self.problem(name, "must be a mapping of names to entries. "
                               f"Received: {type(section).__name__}")
            return {}
        entries = {}
        for entry_name, entry in section.items():
            where = f"{name}.{entry_name}"
            if not isinstance(entry_name, str) or not _IDENTIFIER.match(entry_name):
                self.problem(where, "the name must be a SQL identifier: letters, digits and "
                                    f"underscores, not starting with a digit. "
                                    f"Received: {entry_name!r}")
            elif entry_name.lower() in RESERVED_NAMES:
                self.problem(where, f"the name {entry_name!r} is reserved by sql_dl; choose "
                                    "another")
            elif not isinstance(entry, Mapping):
                self.problem(where, f"must be a mapping of keys. Received: {entry!r}")
            else:
                entries[entry_name] = entry
        return entries

    def _check_keys(self, where: str, entry: Mapping, allowed: tuple[str, ...]) -> None:
        for key in entry:
            if key not in allowed:
                self.problem(f"{where}.{key}", f"unknown key; the keys are {', '.join(allowed)}")

    def _choice(self, where: str, value: Any, allowed: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        return self.check(where, value, choice_problem(value, allowed), default)

    def _bool(self, where: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        return self.check(where, value, None if isinstance(value, bool)
                          else "must be true or false", default)

    def _description(self, where: str, entry: Mapping) -> str | None:
        value = entry.get("description")
        if value is not None and (not isinstance(value, str) or not value.strip()):
            self.problem(f"{where}.description", "must be a non-empty text", value)
            return None
        return None if value is None else " ".join(value.split())

    def _uri(self, where: str, value: Any, must_exist: bool = True, glob: bool = False) -> str:
        if not isinstance(value, str) or not value:
            self.problem(where, "must be a path or URI", value)
            return ""
        if not is_local(value):
            return value
        path = Path(local_path(os.path.expanduser(value)))
        path = Path(os.path.normpath(path if path.is_absolute() else self.base_dir / path))
        has_glob = glob and any(c in str(path) for c in "*?[{")
        if must_exist and not has_glob and not path.exists():
            self.problem(where, f"no such file or directory (resolved to {str(path)!r}); "
                                "check the path", value)
        return str(path)

    def _preprocessor(self, name: str, entry: Mapping) -> PreprocessorSpec:
        where = f"preprocessors.{name}"
        self._check_keys(where, entry, ("size", "mode", "interpolation", "function", "max_pixels",
                                        "decode", "description"))
        size = self.check(f"{where}.size", entry.get("size"), size_problem(entry.get("size")),
                          (1, 1))
        function = entry.get("function")
        if function is not None and (not isinstance(function, str)
                                     or not _FUNCTION_REF.match(function)):
            self.problem(f"{where}.function", "must name a Python function as "
                                              "'package.module:function'", function)
        if function is not None and "mode" in entry:
            self.problem(f"{where}.mode", "give either mode or function, not both. "
                                          f"Received: mode={entry['mode']!r}, function={function!r}")
        if function is None and "mode" not in entry:
            self.problem(f"{where}.mode", f"is required unless function is given; the modes are "
                                          f"{', '.join(PREPROCESS_MODES)}")
        max_pixels = entry.get("max_pixels", MAX_PIXELS)
        return PreprocessorSpec(
            name=name,
            size=(size[0], size[1]),
            mode=self._choice(f"{where}.mode", entry.get("mode"), PREPROCESS_MODES, "none"),
            interpolation=self._choice(f"{where}.interpolation", entry.get("interpolation"),
                                       INTERPOLATIONS, "bilinear"),
            function=function,
            max_pixels=self.check(f"{where}.max_pixels", max_pixels,
                                  max_pixels_problem(max_pixels), MAX_PIXELS),
            description=self._description(where, entry),
            decode=self._choice(f"{where}.decode", entry.get("decode"), DECODE_MODES, "exact"),
        )

    def _model(self, name: str, entry: Mapping, preprocessors: Mapping[str, Any]) -> ModelSpec:
        where = f"models.{name}"
        self._check_keys(where, entry, tuple(f.name for f in ModelSpec.__dataclass_fields__.values()
                                             if f.name != "name"))
        path, application, weights = self._model_source(where, entry)
        input_kind = self._choice(f"{where}.input", entry.get("input"), INPUT_KINDS, "image")
        preprocessor = entry.get("preprocessor")
        if preprocessor is not None:
            if input_kind == "tensor":
                self.problem(f"{where}.preprocessor", "does not apply to input: tensor; remove "
                                                      "it", preprocessor)
            elif preprocessor not in preprocessors:
                known = ", ".join(preprocessors) or "none defined"
                self.problem(f"{where}.preprocessor",
                             f"unknown preprocessor {preprocessor!r} (known: {known})")
        labels = entry.get("labels")
        if labels is None:
            labels = default_labels(application, weights)
        elif labels != "imagenet":
            labels = self._uri(f"{where}.labels", labels)
        features_layer = entry.get("features_layer")
        if features_layer is not None and not isinstance(features_layer, str):
            self.problem(f"{where}.features_layer", "must be a layer name", features_layer)
        on_error = entry.get("on_error", "null")
        batch_size = entry.get("batch_size", 32)
        engine, precision = self._engine(where, entry)
        return ModelSpec(
            name=name,
            path=path,
            application=application,
            weights=weights,
            input=input_kind,
            preprocessor=preprocessor,
            labels=labels,
            features_layer=features_layer,
            batch_size=self.check(f"{where}.batch_size", batch_size,
                                  positive_int_problem(batch_size), 32),
            on_error=self._choice(f"{where}.on_error", "null" if on_error is None else on_error,
                                  ON_ERROR, "null"),
            trust_code=self._bool(f"{where}.trust_code", entry.get("trust_code"), False),
            cache=self._bool(f"{where}.cache", entry.get("cache"), True),
            sha256=self._sha256(f"{where}.sha256", entry.get("sha256"), application, weights),
            description=self._description(where, entry),
            engine=engine,
            precision=precision,
        )

    def _model_source(self, where: str, entry: Mapping) -> tuple[Any, Any, Any]:
        """A model's ``path``, or its ``application`` and ``weights``: exactly one of the two."""
        path, application = entry.get("path"), entry.get("application")
        if (path is None) == (application is None):
            self.problem(where, "give exactly one of path (a model file) or application "
                                "(a keras.applications name). "
                                f"Received: path={path!r}, application={application!r}")
        if path is not None:
            path = self._uri(f"{where}.path", path)
        if application is not None:
            application = self.check(f"{where}.application", application,
                                     application_problem(application), application)
        weights = entry.get("weights")
        if weights is not None and application is None:
            self.problem(f"{where}.weights", "only applies with application; a model file "
                                             "carries its own weights", weights)
        if application is not None:
            weights = "none" if weights is None and "weights" in entry else weights or "imagenet"
            if weights not in ("imagenet", "none"):
                weights = self._uri(f"{where}.weights", weights)
        return path, application, weights

    def _engine(self, where: str, entry: Mapping) -> tuple[str, str]:
        """A model's ``engine`` and ``precision``, which must fit each other."""
        engine = self._choice(f"{where}.engine", entry.get("engine"), ENGINES, "keras")
        precision = self._choice(f"{where}.precision", entry.get("precision"), PRECISIONS,
                                 "float32")
        if engine == "keras" and precision != "float32":
            self.problem(f"{where}.precision", "bfloat16 needs engine: openvino; the keras "
                                               "engine runs float32", precision)
        if engine == "openvino" and importlib.util.find_spec("openvino") is None:
            self.problem(f"{where}.engine", "needs the openvino package, which is not "
                                            "installed; pip install \"sql_dl[openvino]\"", engine)
        return engine, precision

    def _sha256(self, where: str, sha256: Any, application: str | None,
                weights: str | None) -> str | None:
        if sha256 is None:
            return None
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            self.problem(where, "must be the 64 hex digits of a SHA-256 (sha256sum FILE)", sha256)
            return None
        if application is not None and weights in ("imagenet", "none"):
            self.problem(where, "checks the model file (path) or the weights file (weights), "
                                f"and weights: {weights} has no file; remove sha256")
        return sha256.lower()

    def _images(self, name: str, entry: Mapping) -> ImageViewSpec:
        where = f"images.{name}"
        self._check_keys(where, entry, ("path", "recursive", "label", "sample_ratio", "glob",
                                        "extensions", "max_staleness", "max_file_size",
                                        "images_per_task"))
        file_size = entry.get("max_file_size", DEFAULT_MAX_FILE_SIZE)
        per_task = entry.get("images_per_task", DEFAULT_IMAGES_PER_TASK)
        ratio = entry.get("sample_ratio", 1.0)
        staleness = entry.get("max_staleness", 0)
        glob = entry.get("glob")
        if glob is not None and not isinstance(glob, str):
            self.problem(f"{where}.glob", "must be a file name pattern such as '*.png'", glob)
        extensions = entry.get("extensions", None if glob is not None else list(IMAGE_EXTENSIONS))
        if "extensions" in entry and glob is not None:
            self.problem(f"{where}.extensions", "cannot be given with glob, which already "
                                                "decides the file names; give one of them",
                         extensions)
        self.check(f"{where}.extensions", extensions, None if extensions is None
                   else extensions_problem(extensions), None)
        return ImageViewSpec(
            name=name,
            path=self._uri(f"{where}.path", entry.get("path"), glob=True),
            recursive=self._bool(f"{where}.recursive", entry.get("recursive"), True),
            label=self._choice(f"{where}.label", entry.get("label"), LABEL_SOURCES, "parent_dir"),
            sample_ratio=float(self.check(f"{where}.sample_ratio", ratio,
                                          sample_ratio_problem(ratio), 1.0)),
            glob=glob,
            extensions=(None if extensions in (None, "all") or extensions_problem(extensions)
                        else tuple(dict.fromkeys(e.lower() for e in extensions))),
            max_staleness=duration_seconds(self.check(f"{where}.max_staleness", staleness,
                                                      duration_problem(staleness), 0)),
            max_file_size=byte_size(self.check(f"{where}.max_file_size", file_size,
                                               byte_size_problem(file_size),
                                               DEFAULT_MAX_FILE_SIZE)),
            images_per_task=self.check(f"{where}.images_per_task", per_task,
                                       positive_int_problem(per_task), DEFAULT_IMAGES_PER_TASK),
        )

    def _check_function_names(self, preprocessors: Mapping[str, PreprocessorSpec],
                              models: Mapping[str, ModelSpec]) -> None:
        owners: dict[str, str] = {}
        entries = [(f"preprocessors.{n}", (n,)) for n in preprocessors]
        entries += [(f"models.{n}", m.function_names) for n, m in models.items()]
        for where, names in entries:
            for function_name in names:
                key = function_name.lower()  # Spark function names are case-insensitive
                if key in owners:
                    self.problem(where, f"defines SQL function {function_name!r}, "
                                        f"already defined by {owners[key]}; rename one")
                owners.setdefault(key, where)
