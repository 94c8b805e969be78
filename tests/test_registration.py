"""Every SQL function a manifest registers, compared with Keras run directly on the same files."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
from pyspark.sql.functions import pandas_udf
from helpers.data import BUILT_IN, CLASS_NAMES, tiny_cnn
from helpers.reference import keras_outputs, keras_tensor, local, TOLERANCE

import sql_dl
from sql_dl import ManifestError, ModelLoadError

@pytest.fixture(scope="module")
def tensor_model_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(6, activation="relu", name="hidden"),
                              keras.layers.Dense(2)])
    path = tmp_path_factory.mktemp("tensor") / "tensor.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def manifest(photos_dir, cnn_file, labels_file, tensor_model_file):
    return {
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe", "description": "32 px, caffe"},
                          "p32_tf": {"size": [32, 32], "mode": "tf", "interpolation": "bicubic"}},
        "models": {
            "cnn": {"path": str(cnn_file), "preprocessor": "p32", "labels": str(labels_file),
                    "batch_size": 4, "description": "A tiny CNN\n  for tests."},
            "cnn_tf": {"path": str(cnn_file), "preprocessor": "p32_tf", "features_layer": "pool",
                       "on_error": "fail"},
            "raw": {"path": str(tensor_model_file), "input": "tensor"},
        },
        "images": {"photos": {"path": str(photos_dir)},
                   "photos_png": {"path": str(photos_dir), "label": "none", "glob": "*.png",
                                  "recursive": True},
                   "photos_half": {"path": str(photos_dir), "sample_ratio": 0.5}},
    }


@pytest.fixture(scope="module")
def registered(spark, manifest):
    sql_dl.bootstrap(spark, manifest)
    return spark


@pytest.fixture(scope="module")
def reference(cnn_file):
    import keras

    model = keras.saving.load_model(cnn_file)
    return {"model": model,
            "embed": keras.Model(model.inputs, model.get_layer("embed").output),
            "pool": keras.Model(model.inputs, model.get_layer("pool").output)}


def test_model_features_and_preprocessor_match_keras(registered, photos, reference):
    rows = registered.sql("""
        SELECT path, cnn(image) AS out, cnn_features(image) AS features, cnn(path) AS by_path,
               p32(image) AS tensor, cnn_tf(image) AS out_tf, cnn_tf_features(image) AS pool
        FROM photos ORDER BY path""").collect()
    files = [local(r.path) for r in rows]
    assert sorted(files) == photos
    column = lambda name: np.array([r[name] for r in rows])  # noqa: E731
    np.testing.assert_allclose(column("out"), keras_outputs(reference["model"], files, "caffe"), **TOLERANCE)
    np.testing.assert_allclose(column("by_path"), column("out"), **TOLERANCE)
    np.testing.assert_allclose(column("features"), keras_outputs(reference["embed"], files, "caffe"), **TOLERANCE)
    expected_tensor = np.concatenate([keras_tensor(f, (32, 32), mode="caffe") for f in files])
    np.testing.assert_allclose(column("tensor"), expected_tensor.reshape(len(files), -1), **TOLERANCE)
    np.testing.assert_allclose(column("out_tf"), keras_outputs(reference["model"], files, "tf", "bicubic"), **TOLERANCE)
    np.testing.assert_allclose(column("pool"), keras_outputs(reference["pool"], files, "tf", "bicubic"), **TOLERANCE)


def test_top_k_matches_keras(registered, photos, reference):
    rows = registered.sql("SELECT path, cnn_top_k(image, 3) AS top3, cnn_top_k(image, 9) AS all, "
                          "cnn_top_k(image, 1)[0].description AS best FROM photos ORDER BY path").collect()
    expected = keras_outputs(reference["model"], [local(r.path) for r in rows], "caffe")
    for row, probabilities in zip(rows, expected):
        order = np.argsort(-probabilities, kind="stable")
        assert [e["class"] for e in row.top3] == [CLASS_NAMES[i] for i in order[:3]]
        assert [e["description"] for e in row.top3] == [CLASS_NAMES[i] for i in order[:3]]
        np.testing.assert_allclose([e["probability"] for e in row.top3], probabilities[order[:3]], **TOLERANCE)
        assert len(row.all) == len(CLASS_NAMES)
        assert row.best == CLASS_NAMES[order[0]]


def test_top_k_schema_and_unlabelled_model(registered):
    schema = registered.sql("SELECT cnn_top_k(image, 2) AS t FROM photos").schema["t"].dataType
    assert schema.simpleString() == "array<struct<class:string,description:string,probability:float>>"
    row = registered.sql("SELECT cnn_tf_top_k(image, 2) AS t FROM photos LIMIT 1").first()
    assert all(e["class"] == e["description"] and e["class"] in {"0", "1", "2", "3", "4"}
               for e in row.t)


@pytest.mark.parametrize("call, message", [
    ("cnn_top_k(image, 'three')", "cnn_top_k(image, k): k must be an INT. Received: k STRING 'three'"),
    ("cnn_top_k(image, 2.5)", "cnn_top_k(image, k): k must be an INT. Received: k DECIMAL(2,1) 2.5"),
    ("cnn_top_k(image, -1)", "cnn_top_k(image, k): k must be an INT of at least 0. Received: k INT -1"),
    ("cnn_top_k(image, length(path) > 3)",
     "cnn_top_k(image, k): k must be an INT. Received: k BOOLEAN (length(photos.path) > 3)"),
    ("cnn_top_k(image)", "cnn_top_k(image, k): takes 2 arguments. Received: 1 argument"),
    ("cnn_top_k(image, 2, 3)", "cnn_top_k(image, k): takes 2 arguments. Received: 3 arguments"),
    ("cnn()", "cnn(image): takes 1 argument. Received: 0 arguments"),
    ("cnn_features(label, image)", "cnn_features(image): takes 1 argument. Received: 2 arguments"),
    ("p32(42)", "p32(image): image must be a BINARY, STRING or image STRUCT. Received: image INT 42"),
    ("raw(path)", "raw(x): x must be an ARRAY of numbers (or of such arrays). Received: x STRING photos.path"),
    ("raw_top_k(array(1.0D), 'a')", "raw_top_k(x, k): k must be an INT. Received: k STRING 'a'"),
    ("sql_dl_thumbnail(image, 0)",
     "sql_dl_thumbnail(image, size): size must be an INT from 1 to 1024. Received: size INT 0"),
    ("sql_dl_thumbnail(image, '64')",
     "sql_dl_thumbnail(image, size): size must be an INT. Received: size STRING '64'"),
    ("sql_dl_thumbnail(image, 64, 1)",
     "sql_dl_thumbnail(image, size): takes 1 or 2 arguments. Received: 3 arguments"),
    ("sql_dl_image_info(array(1))",
     "sql_dl_image_info(image): image must be a BINARY, STRING or image STRUCT. Received: image "
     "ARRAY<INT> array(1)"),
])
def test_wrong_arguments_fail_at_analysis_before_any_job(registered, call, message):
    from pyspark.errors import AnalysisException

    tracker = registered.sparkContext.statusTracker()
    registered.sparkContext.setJobGroup("wrong-arguments", "wrong arguments")
    try:
        with pytest.raises(AnalysisException) as raised:
            registered.sql(f"SELECT {call} FROM photos").collect()
        assert str(raised.value).splitlines()[0] == f"{message}; line 1 pos 7"
        assert list(tracker.getJobIdsForGroup("wrong-arguments")) == []  # no task ran
    finally:
        registered.sparkContext.setJobGroup(None, None)


def test_right_arguments_of_every_integer_type_and_null_pass(registered):
    row = registered.sql("SELECT cnn_top_k(image, CAST(2 AS TINYINT)) AS tiny, "
                         "cnn_top_k(image, 2L) AS big, cnn_top_k(image, NULL) AS null_k, "
                         "cnn_top_k(image, size(array(1, 2))) AS from_column, cnn(NULL) AS null_image, "
                         "raw(array(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)) AS ints "
                         "FROM photos ORDER BY path LIMIT 1").first()
    assert row.tiny == row.big == row.from_column and len(row.tiny) == 2
    assert (row.null_k, row.null_image) == (None, None)
    assert len(row.ints) == 2


def test_spark_image_struct_input(registered, photos_dir, photos, reference):
    frame = registered.read.format("image").load(str(photos_dir / "*" / "*.png"))
    frame.createOrReplaceTempView("png_structs")
    rows = registered.sql("SELECT image.origin AS origin, cnn(image) AS out, "
                          "p32(image) AS tensor FROM png_structs ORDER BY origin").collect()
    files = [local(r.origin) for r in rows]
    assert files == [f for f in photos if f.suffix == ".png"]
    np.testing.assert_allclose([r.out for r in rows], keras_outputs(reference["model"], files, "caffe"), **TOLERANCE)


def test_view_columns_and_labels(registered, photos):
    frame = registered.table("photos")
    assert frame.schema.simpleString() == ("struct<path:string,label:string,image:binary,"
                                           "length:bigint,modification_time:timestamp>")
    rows = frame.orderBy("path").collect()
    assert [(local(r.path), r.label, r.length) for r in rows] == [
        (f, f.parent.name, f.stat().st_size) for f in photos]
    assert bytes(rows[0].image) == photos[0].read_bytes()
    png = registered.sql("SELECT path, label FROM photos_png").collect()
    assert sorted(local(r.path) for r in png) == [f for f in photos if f.suffix == ".png"]
    assert {r.label for r in png} == {None}
    half = [r.path for r in registered.sql("SELECT path FROM photos_half ORDER BY path").collect()]
    assert 0 < len(half) < len(photos) and set(map(local, half)) < set(photos)
    assert half == [r.path for r in registered.sql("SELECT path FROM photos_half ORDER BY path").collect()]


def test_null_and_undecodable_inputs(registered, photos):
    registered.createDataFrame(
        [("good", photos[0].read_bytes()), ("bad", b"definitely not an image"), ("null", None)],
        "name string, image binary").createOrReplaceTempView("mixed")
    rows = {r.name: r for r in registered.sql(
        "SELECT name, cnn(image) AS out, cnn_top_k(image, 2) AS top, cnn_features(image) AS f, "
        "p32(image) AS t FROM mixed").collect()}
    assert rows["good"].out is not None and len(rows["good"].top) == 2
    for name in ("bad", "null"):
        assert (rows[name].out, rows[name].top, rows[name].f, rows[name].t) == (None, None, None, None)
    assert registered.sql("SELECT cnn_top_k(image, CAST(NULL AS INT)) AS t FROM mixed "
                          "WHERE name = 'good'").first().t is None


def test_on_error_fail_names_the_image(registered):
    from pyspark.errors import PythonException

    data = b"definitely not an image"
    digest = hashlib.sha256(data).hexdigest()[:16]
    with pytest.raises(PythonException, match=rf"ImageDecodeError: cannot decode the image: .*Received: "
                                              rf"image of {len(data)} bytes with SHA-256 {digest}"):
        registered.sql("SELECT cnn_tf(image) FROM mixed").collect()
    with pytest.raises(PythonException, match=r"ImageDecodeError: cannot decode the image: .*"
                                              r"Received: path='/no/such/file.png'"):
        registered.sql("SELECT cnn_tf('/no/such/file.png')").collect()


def test_tensor_input(registered, tensor_model_file):
    import keras

    values = np.random.default_rng(0).normal(size=(5, 4, 3))
    registered.createDataFrame(
        [(i, v.reshape(-1).tolist(), v.tolist()) for i, v in enumerate(values)] + [(5, [1.0, 2.0], None)],
        "id int, flat array<double>, nested array<array<double>>").createOrReplaceTempView("tensors")
    rows = registered.sql("SELECT id, raw(flat) AS a, raw(nested) AS b, raw(cast(flat AS array<float>)) AS c, "
                          "raw_features(flat) AS h FROM tensors ORDER BY id").collect()
    model = keras.saving.load_model(tensor_model_file)
    expected = model.predict(values.astype(np.float32), verbose=0)
    hidden = keras.Model(model.inputs, model.get_layer("hidden").output).predict(values, verbose=0)
    for name in ("a", "b", "c"):
        np.testing.assert_allclose([r[name] for r in rows[:5]], expected, **TOLERANCE)
    np.testing.assert_allclose([r.h for r in rows[:5]], hidden, **TOLERANCE)
    assert (rows[5].a, rows[5].b) == (None, None)  # wrong size, and NULL


def test_models_view(registered, cnn_file):
    rows = {r.function: r for r in registered.table("sql_dl_models").collect()}
    assert set(rows) == {"p32", "p32_tf", "cnn", "cnn_features", "cnn_top_k", "cnn_tf",
                         "cnn_tf_features", "cnn_tf_top_k", "raw", "raw_features", "raw_top_k",
                         *BUILT_IN}
    assert tuple(rows["sql_dl_image_error"])[1:4] == ("image_error", None, "image")
    assert tuple(rows["cnn"])[1:] == ("model", "cnn", "image", 5, "p32", str(cnn_file),
                                      "A tiny CNN for tests.")
    assert tuple(rows["cnn_features"])[1:5] == ("features", "cnn", "image", 8)
    assert tuple(rows["cnn_tf_features"])[4] == 4  # the pool layer
    assert tuple(rows["raw"])[1:6] == ("model", "raw", "tensor", 2, None)
    assert tuple(rows["p32"])[1:] == ("preprocessor", None, "image", 3072, "p32", "mode=caffe",
                                      "32 px, caffe")


def describe(spark, function: str) -> list[str]:
    return [r[0] for r in spark.sql(f"DESCRIBE FUNCTION EXTENDED {function}").collect()]


def test_functions_describe_themselves(registered, cnn_file):
    cnn = describe(registered, "cnn")
    assert cnn[:3] == ["Function: cnn", "Class: sql_dl.executor.udfs.model_udf",
                       f"Usage: cnn(image) - The 5 outputs of model cnn ({cnn_file}; preprocessing "
                       "p32 (32x32 bilinear, mode caffe); labels 5 (cat, dog, fish, bird, frog)) "
                       "as ARRAY<FLOAT>, NULL for an image that does not decode. A tiny CNN for "
                       "tests."]
    assert "      > SELECT cnn(image) FROM photos LIMIT 5;" in "\n".join(cnn)
    features = describe(registered, "cnn_tf_features")[2]
    assert features.startswith("Usage: cnn_tf_features(image) - The 4 values of layer 'pool' "
                               "of model cnn_tf (")
    assert "labels none (top_k gives class indices)" in features
    raw = "\n".join(describe(registered, "raw_top_k"))
    assert "Usage: raw_top_k(x, k) - The k most probable of the 2 classes" in raw
    assert "* x - ARRAY<FLOAT> of 12 values, the model's input of shape [4, 3] flattened" in raw
    assert "* k - INT, at least 0" in raw
    assert describe(registered, "p32")[2].startswith(
        "Usage: p32(image) - The image as a model receives it, preprocessed by p32 (32x32 "
        "bilinear, mode caffe): ARRAY<FLOAT> of 3072 values")
    shown = [r.function for r in registered.sql("SHOW FUNCTIONS LIKE 'cnn*'").collect()]
    assert shown == ["cnn", "cnn_features", "cnn_tf", "cnn_tf_features", "cnn_tf_top_k",
                     "cnn_top_k"]


def test_bootstrap_again_replaces_definitions(spark, registered, manifest, cnn_file, photos):
    from pyspark.errors import AnalysisException

    spark.createDataFrame([(photos[0].read_bytes(),)], "image binary").createOrReplaceTempView("one")
    smaller = {"models": {"cnn2": {"path": str(cnn_file), "preprocessor": "p32"}},
               "preprocessors": manifest["preprocessors"]}
    try:
        sql_dl.bootstrap(spark, smaller)
        assert spark.sql("SELECT size(cnn2(image)) AS n FROM one").first().n == 5
        with pytest.raises(AnalysisException, match="UNRESOLVED_ROUTINE"):
            spark.sql("SELECT cnn_top_k(image, 1) FROM one").collect()
        with pytest.raises(AnalysisException, match="TABLE_OR_VIEW_NOT_FOUND"):
            spark.table("photos")
        assert {r.function for r in spark.table("sql_dl_models").collect()} == {
            "p32", "p32_tf", "cnn2", "cnn2_features", "cnn2_top_k", *BUILT_IN}
    finally:
        sql_dl.bootstrap(spark, manifest)


@pytest.fixture
def broken_model(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    return path


@pytest.mark.parametrize("entry, error, message", [
    ({"path": "{broken}", "preprocessor": "p32"}, ModelLoadError,
     r"models.m.path: cannot load a Keras model: .* Received: path='.*broken.keras'"),
    ({"path": "{cnn}", "preprocessor": "p64"}, ModelLoadError,
     r"models.m.preprocessor: preprocessor 'p64' resizes to \[64, 64\] but the model takes \[32, 32\] "
     r"images; set preprocessors.p64.size: \[32, 32\]. Received: size=\[64, 64\]"),
    ({"path": "{cnn}", "preprocessor": "p32", "features_layer": "nope"}, ModelLoadError,
     # the input layer's name has a number when the process made other models first
     r"models.m.features_layer: the model has no such layer; give one of input_layer(_\d+)?, "
     r"conv2d, pool, "
     r"embed, probs. Received: features_layer='nope'"),
    ({"path": "{cnn}", "preprocessor": "p32", "labels": "{labels}"}, ModelLoadError,
     r"models.m.labels: 2 labels for a model with 5 outputs"),
    ({"path": "{cnn}", "input": "tensor", "preprocessor": "p32"}, ManifestError,
     r"models.m.preprocessor: does not apply to input: tensor; remove it. Received: preprocessor='p32'"),
    ({"path": "{missing}"}, ManifestError, r"models.m.path: no such file or directory"),
])
def test_bootstrap_errors_leave_the_session_as_it_was(spark, registered, cnn_file, broken_model,
                                                      tmp_path, entry, error, message):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    paths = {"broken": broken_model, "cnn": cnn_file, "labels": labels, "missing": tmp_path / "x.keras"}
    entry = {k: v.format(**paths) if isinstance(v, str) else v for k, v in entry.items()}
    bad = {"preprocessors": {"p32": {"size": [32, 32], "mode": "tf"},
                             "p64": {"size": [64, 64], "mode": "tf"}},
           "models": {"m": entry}}
    with pytest.raises(error, match=rf"^<manifest dict>: {message}"):
        sql_dl.bootstrap(spark, bad)
    assert spark.sql("SELECT count(cnn(image)) AS n FROM photos").first().n > 0


def test_input_that_is_not_an_image(spark, tensor_model_file):
    with pytest.raises(ModelLoadError, match=r"models.m.input: the model's input shape \(4, 3\) is not "
                                             r"an RGB image \(H, W, 3\); use input: tensor"):
        sql_dl.bootstrap(spark, {"models": {"m": {"path": str(tensor_model_file)}}})


def worker_stats(spark) -> dict:
    """The model cache's counters of every idle Python worker: Spark hands its idle workers
    out in turn, so many short tasks visit them all."""
    def stats(ids: pd.Series) -> pd.Series:
        from sql_dl.executor import model_cache

        return pd.Series([json.dumps([os.getpid(), model_cache.stats()])] * len(ids))

    rows = spark.range(0, 64, 1, 64).select(pandas_udf(stats, "string")("id").alias("s")).collect()
    return dict(json.loads(row.s) for row in rows)


def test_model_loads_once_per_worker_across_tasks_and_queries(registered, manifest, cnn_file):
    from sql_dl.staging import staged_name

    sql_dl.bootstrap(registered, {  # without the prediction cache, every query needs the model
        "preprocessors": {"p_uncached": {"size": [32, 32], "mode": "caffe"}},
        "models": {"uncached": {"path": str(cnn_file), "preprocessor": "p_uncached",
                                "cache": False}}}, replace=False)
    key = staged_name(str(cnn_file))
    before = worker_stats(registered)  # workers this session's earlier tests used
    try:
        query = "SELECT uncached(image) FROM (SELECT /*+ REPARTITION(6) */ * FROM photos)"
        for _ in range(3):
            assert len(registered.sql(query).collect()) == 9
    finally:
        sql_dl.bootstrap(registered, manifest)  # as the other tests of the module expect
    after = worker_stats(registered)

    def new(counter: str, pid: str) -> int:
        return (after[pid][counter].get(key, 0)
                - before.get(pid, {counter: {}})[counter].get(key, 0))

    assert all(new("loads", pid) <= 1 for pid in after)  # never twice in one worker
    assert sum(new("hits", pid) for pid in after) >= 3  # reused across tasks and queries


def test_warm_up_at_bootstrap(spark, registered, photos, tmp_path):
    """The effect (a first query as fast as a warm one) is measured by benchmarks/inference.py."""
    model_file = tmp_path / "warm.keras"
    tiny_cnn(seed=99).save(model_file)  # new content: no worker has it yet
    sql_dl.bootstrap(spark, {"preprocessors": {"pw": {"size": [32, 32], "mode": "tf"}},
                             "models": {"warmed": {"path": str(model_file), "preprocessor": "pw"}}},
                     replace=False, warm_up=True)
    from sql_dl.staging import staged_name

    key = staged_name(str(model_file))
    assert sum(s["loads"].get(key, 0) for s in worker_stats(spark).values()) >= 1  # before any query
    assert spark.sql("SELECT count(warmed(image)) AS n FROM photos").first().n == len(photos)
    assert spark.sql("SELECT count(cnn(image)) AS n FROM photos").first().n == len(photos)  # kept


def test_the_sql_reference_names_each_system_views_columns(registered):
    """docs/sql.md lists the columns of sql_dl_models, sql_dl_cache and sql_dl_devices as
    the views have them (it once promised sql_dl_devices a hits column)."""
    import re
    from pathlib import Path

    text = " ".join((Path(__file__).parents[1] / "docs" / "sql.md").read_text().split())
    for view in ("sql_dl_models", "sql_dl_cache", "sql_dl_devices"):
        listed = re.search(rf"`{view}` lists [^`]*: `([^`]+)`", text).group(1)
        columns = [re.sub(r" \(.*", "", c).strip() for c in re.sub(r"\([^)]*\)", "", listed)
                   .split(",")]
        assert columns == registered.table(view).columns, view
