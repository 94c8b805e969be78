"""Manifest validation, without Spark: every rule has a case asserting its message."""

from __future__ import annotations

import re

import pytest

from sql_dl import ManifestError, load_manifest
from sql_dl.manifest import ImageViewSpec, PreprocessorSpec
from sql_dl.rules import BUILT_IN_FUNCTIONS, DEVICES_VIEW, RESERVED_NAMES, SYSTEM_VIEWS


@pytest.fixture
def files(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.keras").write_bytes(b"not checked here")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "data" / "digits").mkdir(parents=True)
    return tmp_path


def write(directory, text):
    path = directory / "models.yaml"
    path.write_text(text)
    return path


VALID = """
preprocessors:
  p32: {size: [32, 32], mode: tf, interpolation: nearest}
models:
  digits_cnn:
    path: models/x.keras
    preprocessor: p32
    labels: labels.txt
    features_layer: embed
    batch_size: 16
    on_error: fail
  inception:
    application: InceptionV3
    weights: none
  raw:
    path: models/x.keras
    input: tensor
    on_error: null
images:
  digits:
    path: data/digits
    recursive: false
    label: none
    sample_ratio: 0.5
    glob: "*.png"
"""


def test_valid_manifest_resolves_paths_against_its_file(files):
    manifest = load_manifest(write(files, VALID))
    assert manifest.preprocessors["p32"] == PreprocessorSpec("p32", (32, 32), "tf", "nearest")
    cnn = manifest.models["digits_cnn"]
    assert cnn.path == str(files / "models" / "x.keras")
    assert cnn.labels == str(files / "labels.txt")
    assert (cnn.batch_size, cnn.on_error, cnn.features_layer) == (16, "fail", "embed")
    inception = manifest.models["inception"]
    assert (inception.application, inception.weights, inception.labels) == ("InceptionV3", "none", None)
    assert manifest.models["raw"].on_error == "null"  # YAML null means "null"
    assert manifest.models["raw"].input == "tensor"
    assert manifest.images["digits"] == ImageViewSpec(
        "digits", str(files / "data" / "digits"), False, "none", 0.5, "*.png", extensions=None)


def test_defaults(files):
    manifest = load_manifest({"models": {"m": {"application": "MobileNetV2"}},
                              "images": {"v": {"path": str(files / "data")}}})
    model = manifest.models["m"]
    assert (model.weights, model.labels, model.input, model.batch_size, model.on_error) == (
        "imagenet", "imagenet", "image", 32, "null")
    view = manifest.images["v"]
    assert (view.recursive, view.label, view.sample_ratio, view.glob) == (True, "parent_dir", 1.0, None)
    assert view.extensions == ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")


@pytest.mark.parametrize("entry, extensions", [
    ({}, ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")),
    ({"extensions": "all"}, None),
    ({"extensions": ["PNG", "jpg", "png", "dcm"]}, ("png", "jpg", "dcm")),
    ({"glob": "scan_*"}, None),  # the glob decides
])
def test_image_view_extensions(files, entry, extensions):
    manifest = load_manifest({"images": {"v": {"path": str(files / "data"), **entry}}})
    assert manifest.images["v"].extensions == extensions


def test_remote_uris_are_kept_as_given(files):
    manifest = load_manifest({"models": {"m": {"path": "hdfs://nn:8020/models/x.keras"}},
                              "images": {"v": {"path": "s3a://bucket/photos"}}})
    assert manifest.models["m"].path == "hdfs://nn:8020/models/x.keras"
    assert manifest.images["v"].path == "s3a://bucket/photos"


def test_error_names_file_entry_and_key_with_the_allowed_values(files):
    text = VALID.replace("preprocessor: p32", "preprocessor: p_32")
    path = write(files, text)
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert str(raised.value) == (
        f"{path}: models.digits_cnn.preprocessor: unknown preprocessor 'p_32' (known: p32)")


def test_every_problem_is_reported_at_once(files):
    path = write(files, VALID.replace("batch_size: 16", "batch_size: 0")
                 .replace("mode: tf", "mode: sepia"))
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    assert len(raised.value.problems) == 2
    assert "models.digits_cnn.batch_size: must be a positive integer. Received: batch_size=0" in str(raised.value)
    assert "preprocessors.p32.mode: must be one of caffe, tf, torch, scale, none. Received: mode='sepia'" in str(raised.value)


CASES = [
    ("colours: {}", r"colours: unknown section; the sections are preprocessors, models, images"),
    ("models: [a, b]", r"models: must be a mapping of names to entries. Received: list"),
    ("models: {1abc: {path: models/x.keras}}", r"models.1abc: the name must be a SQL identifier"),
    ("models: {sql_dl_models: {path: models/x.keras}}", r"models.sql_dl_models: the name 'sql_dl_models' is reserved"),
    ("models: {m: 3}", r"models.m: must be a mapping of keys. Received: 3"),
    ("models: {m: {path: models/x.keras, colour: red}}", r"models.m.colour: unknown key; the keys are path, application,"),
    ("models: {m: {}}", r"models.m: give exactly one of path .* or application"),
    ("models: {m: {path: models/x.keras, application: VGG16}}", r"models.m: give exactly one of path"),
    ("models: {m: {path: models/missing.keras}}", r"models.m.path: no such file or directory \(resolved to .*/models/missing.keras'\); check the path. Received: path='models/missing.keras'"),
    ("models: {m: {application: VGG17}}", r"models.m.application: must be a keras.applications image classifier \(known: Xception,.*Received: application='VGG17'"),
    ("models: {m: {path: models/x.keras, weights: none}}", r"models.m.weights: only applies with application"),
    ("models: {m: {application: VGG16, weights: w.h5}}", r"models.m.weights: no such file or directory .*Received: weights='w.h5'"),
    ("models: {m: {path: models/x.keras, input: audio}}", r"models.m.input: must be one of image, tensor. Received: input='audio'"),
    ("preprocessors: {p: {size: [2, 2], mode: tf}}\nmodels: {m: {path: models/x.keras, input: tensor, preprocessor: p}}",
     r"models.m.preprocessor: does not apply to input: tensor"),
    ("models: {m: {path: models/x.keras, preprocessor: p}}", r"models.m.preprocessor: unknown preprocessor 'p' \(known: none defined\)"),
    ("models: {m: {path: models/x.keras, labels: nope.txt}}", r"models.m.labels: no such file or directory .*Received: labels='nope.txt'"),
    ("models: {m: {path: models/x.keras, features_layer: 3}}", r"models.m.features_layer: must be a layer name. Received: features_layer=3"),
    ("models: {m: {path: models/x.keras, batch_size: true}}", r"models.m.batch_size: must be a positive integer. Received: batch_size=True"),
    ("models: {m: {path: models/x.keras, batch_size: 2.5}}", r"models.m.batch_size: must be a positive integer. Received: batch_size=2.5"),
    ("models: {m: {path: models/x.keras, on_error: skip}}", r"models.m.on_error: must be one of null, fail. Received: on_error='skip'"),
    ("preprocessors: {p: {mode: tf}}", r"preprocessors.p.size: must be \[height, width\], two positive integers. Received: size=None"),
    ("preprocessors: {p: {size: [0, 3], mode: tf}}", r"preprocessors.p.size: must be \[height, width\].*Received: size=\[0, 3\]"),
    ("preprocessors: {p: {size: [3, 3]}}", r"preprocessors.p.mode: is required unless function is given; the modes are caffe"),
    ("preprocessors: {p: {size: [3, 3], mode: tf, function: 'a.b:c'}}", r"preprocessors.p.mode: give either mode or function, not both"),
    ("preprocessors: {p: {size: [3, 3], function: 'not a function'}}", r"preprocessors.p.function: must name a Python function as 'package.module:function'"),
    ("preprocessors: {p: {size: [3, 3], mode: tf, interpolation: cubic}}", r"preprocessors.p.interpolation: must be one of nearest, bilinear, bicubic, hamming, box, lanczos. Received: interpolation='cubic'"),
    ("preprocessors: {p: {size: [3, 3], mode: tf, colour: red}}", r"preprocessors.p.colour: unknown key; the keys are size, mode, interpolation, function, max_pixels, decode"),
    ("preprocessors: {p: {size: [3, 3], mode: tf, decode: fast}}", r"preprocessors.p.decode: must be one of exact, draft. Received: decode='fast'"),
    ("preprocessors: {p: {size: [3, 3], mode: tf, max_pixels: 0}}", r"preprocessors.p.max_pixels: must be a positive integer. Received: max_pixels=0"),
    ("preprocessors: {p: {size: [3, 3], mode: tf, max_pixels: 200000000}}", r"preprocessors.p.max_pixels: must be at most 178956970, the most Pillow decodes. Received: max_pixels=200000000"),
    ("models: {sql_dl_image_error: {path: models/x.keras}}", r"models.sql_dl_image_error: the name 'sql_dl_image_error' is reserved"),
    ("preprocessors: {sql_dl_thumbnail: {size: [3, 3], mode: tf}}", r"preprocessors.sql_dl_thumbnail: the name 'sql_dl_thumbnail' is reserved"),
    ("models: {m: {path: models/x.keras, precision: bfloat16}}", r"models.m.precision: bfloat16 needs engine: openvino; the keras engine runs float32. Received: precision='bfloat16'"),
    ("models: {m: {path: models/x.keras, engine: tvm}}", r"models.m.engine: must be one of keras, openvino. Received: engine='tvm'"),
    ("models: {m: {path: models/x.keras, engine: openvino, precision: float16}}", r"models.m.precision: must be one of float32, bfloat16. Received: precision='float16'"),
    ("models: {m: {path: models/x.keras, trust_code: yes please}}", r"models.m.trust_code: must be true or false. Received: trust_code='yes please'"),
    ("models: {m: {path: models/x.keras, sha256: abc}}", r"models.m.sha256: must be the 64 hex digits of a SHA-256 \(sha256sum FILE\). Received: sha256='abc'"),
    (f"models: {{m: {{application: VGG16, sha256: {'a' * 64}}}}}", r"models.m.sha256: checks the model file \(path\) or the weights file \(weights\), and weights: imagenet has no file; remove sha256"),
    ("images: {v: {recursive: true}}", r"images.v.path: must be a path or URI. Received: path=None"),
    ("images: {v: {path: nowhere}}", r"images.v.path: no such file or directory .*Received: path='nowhere'"),
    ("images: {v: {path: data, recursive: yes please}}", r"images.v.recursive: must be true or false. Received: recursive='yes please'"),
    ("images: {v: {path: data, label: folder}}", r"images.v.label: must be one of parent_dir, none. Received: label='folder'"),
    ("images: {v: {path: data, sample_ratio: 0}}", r"images.v.sample_ratio: must be a number in \(0, 1\]. Received: sample_ratio=0"),
    ("images: {v: {path: data, sample_ratio: 1.5}}", r"images.v.sample_ratio: must be a number in \(0, 1\]. Received: sample_ratio=1.5"),
    ("images: {v: {path: data, glob: [a]}}", r"images.v.glob: must be a file name pattern"),
    ("images: {v: {path: data, extensions: [.png]}}", r"images.v.extensions: must be a list of file "
     r"name extensions without the dot, such as \[jpg, png\], or all \(every file\). "
     r"Received: extensions=\['.png'\]"),
    ("images: {v: {path: data, extensions: every}}", r"images.v.extensions: must be a list .* "
     r"Received: extensions='every'"),
    ("images: {v: {path: data, glob: '*.png', extensions: [png]}}", r"images.v.extensions: cannot "
     r"be given with glob, which already decides the file names; give one of them"),
    ("images: {v: {path: data, colour: red}}", r"images.v.colour: unknown key; the keys are path, recursive, label, sample_ratio, glob"),
    ("preprocessors: {m: {size: [3, 3], mode: tf}}\nmodels: {m: {path: models/x.keras}}",
     r"models.m: defines SQL function 'm', already defined by preprocessors.m"),
    ("models: {m: {path: models/x.keras}, m_top: {path: models/x.keras}, m_top_k: {path: models/x.keras}}",
     r"models.m_top_k: defines SQL function 'm_top_k', already defined by models.m"),
]


@pytest.mark.parametrize("text, message", CASES, ids=[m.split(":")[0].split(" ")[0] + str(i) for i, (_, m) in enumerate(CASES)])
def test_each_rule(files, text, message):
    path = write(files, text)
    with pytest.raises(ManifestError, match=f"^{re.escape(str(path))}: {message}"):
        load_manifest(path)


def test_not_yaml(files):
    path = write(files, "models: {m: [")
    with pytest.raises(ManifestError, match=f"^{re.escape(str(path))}: not valid YAML"):
        load_manifest(path)


def test_not_a_mapping(files):
    with pytest.raises(ManifestError, match=r"the manifest must be a mapping .*. Received: list"):
        load_manifest(write(files, "- a\n- b\n"))


def test_missing_manifest_file(tmp_path):
    with pytest.raises(ManifestError, match=r"nope.yaml: cannot read the manifest: No such file"):
        load_manifest(tmp_path / "nope.yaml")


def test_manifest_error_is_a_value_error(files):
    with pytest.raises(ValueError):
        load_manifest({"models": {"m": {}}})


def test_empty_manifest_is_valid(files):
    manifest = load_manifest(write(files, ""))
    assert (manifest.preprocessors, manifest.models, manifest.images) == ({}, {}, {})


@pytest.mark.parametrize("section", ["images", "models", "preprocessors"])
@pytest.mark.parametrize("name", RESERVED_NAMES)
def test_every_name_sql_dl_takes_is_reserved_in_every_section(section, name):
    """The system views and built-in functions, derived from their constants: an image view
    named sql_dl_devices would otherwise be replaced by the devices view."""
    entry = {"images": {"path": "."}, "models": {"path": "x.keras"},
             "preprocessors": {"size": [3, 3], "mode": "tf"}}[section]
    with pytest.raises(ManifestError, match=rf"{section}\.{name}: the name '{name}' is reserved"):
        load_manifest({section: {name: entry}})
    assert set(SYSTEM_VIEWS) | set(BUILT_IN_FUNCTIONS) == set(RESERVED_NAMES)
    assert DEVICES_VIEW in RESERVED_NAMES
