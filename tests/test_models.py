"""keras.applications models: a weights file saved here, and the offline ImageNet errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.reference import keras_tensor, local, TOLERANCE

import sql_dl
from sql_dl import ModelLoadError

APPLICATION = "MobileNetV2"


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """An empty sql_dl cache and no way to download: what a machine offline sees."""
    monkeypatch.setenv("SQL_DL_CACHE", str(tmp_path / "cache"))
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")  # the discard port: refused at once
    return tmp_path


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(11)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.weights.h5"
    keras.applications.MobileNetV2(weights=None).save_weights(path)
    return path


def test_application_with_a_weights_file_matches_keras(spark, photos_dir, photos, weights_file,
                                                       isolated_caches):
    import keras

    sql_dl.bootstrap(spark, {"models": {"mobilenet": {"application": APPLICATION,
                                                      "weights": str(weights_file)}},
                             "images": {"app_photos": {"path": str(photos_dir), "glob": "*.jpg"}}})
    rows = spark.sql("SELECT path, mobilenet(image) AS out, mobilenet_features(image) AS f, "
                     "mobilenet_top_k(image, 2) AS top FROM app_photos ORDER BY path").collect()
    files = [local(r.path) for r in rows]
    assert files == [f for f in photos if f.suffix == ".jpg"]
    model = keras.applications.MobileNetV2(weights=str(weights_file))
    x = np.concatenate([keras_tensor(f, (224, 224), mode="tf") for f in files])
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose([r.out for r in rows], expected, **TOLERANCE)
    pooled = keras.Model(model.inputs, model.layers[-2].output).predict(x, verbose=0)
    np.testing.assert_allclose([r.f for r in rows], pooled, rtol=1e-4, atol=1e-5)
    assert [int(r.top[0]["class"]) for r in rows] == list(expected.argmax(axis=1))
    info = spark.sql("SELECT input, output_size, preprocessor, source FROM sql_dl_models "
                     "WHERE function = 'mobilenet'").first()
    assert tuple(info) == ("image", 1000, "mobilenet (default)",
                           f"keras.applications.MobileNetV2(weights={weights_file})")
    built = list((isolated_caches / "cache" / "applications").glob("MobileNetV2-*.keras"))
    assert len(built) == 1  # built once, kept for the next bootstrap


def test_imagenet_weights_offline_say_what_is_missing(spark, isolated_caches):
    with pytest.raises(ModelLoadError, match=r"models.m.weights: cannot get the ImageNet weights of "
                                             r"MobileNetV2: they are not in Keras's cache .* Give "
                                             r"weights: /path/to/file.h5"):
        sql_dl.bootstrap(spark, {"models": {"m": {"application": APPLICATION}}})


def test_imagenet_labels_offline_say_what_is_missing(spark, isolated_caches, weights_file):
    with pytest.raises(ModelLoadError, match=r"models.m.labels: cannot get the ImageNet class index "
                                             r"imagenet_class_index.json: .* give labels: "
                                             r"/path/to/labels.txt"):
        sql_dl.bootstrap(spark, {"models": {"m": {"application": APPLICATION,
                                                  "weights": str(weights_file),
                                                  "labels": "imagenet"}}})


def test_saved_model_directory_matches_keras(spark, photos_dir, photos, cnn_file, tmp_path):
    import keras

    model = keras.saving.load_model(cnn_file)
    exported = tmp_path / "cnn_saved_model"
    model.export(exported, verbose=False)
    sql_dl.bootstrap(spark, {"preprocessors": {"p32": {"size": [32, 32], "mode": "torch"}},
                             "models": {"saved": {"path": str(exported), "preprocessor": "p32"}},
                             "images": {"sm_photos": {"path": str(photos_dir)}}})
    rows = spark.sql("SELECT path, saved(image) AS out, saved_features(image) AS f "
                     "FROM sm_photos ORDER BY path").collect()
    files = [local(r.path) for r in rows]
    assert files == photos
    x = np.concatenate([keras_tensor(f, (32, 32), mode="torch") for f in files])
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose([r.out for r in rows], expected, **TOLERANCE)
    np.testing.assert_allclose([r.f for r in rows], expected, **TOLERANCE)

    with pytest.raises(ModelLoadError, match=r"models.saved.features_layer: a SavedModel's layers "
                                             r"are not visible"):
        sql_dl.bootstrap(spark, {"models": {"saved": {"path": str(exported),
                                                      "features_layer": "embed"}}})
