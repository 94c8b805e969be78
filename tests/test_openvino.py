"""engine: openvino against Keras run directly: float32 to the output's precision, bfloat16
within 3% of the features and 99% of the top-1 labels of a trained model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml
from helpers.processes import run_cli
from helpers.reference import keras_tensor, local

import sql_dl
from sql_dl import ModelLoadError
from sql_dl.paths import cache_dir


@keras.saving.register_keras_serializable(package="sql_dl_tests")
class LogGamma(keras.layers.Layer):
    """A layer whose TensorFlow op, Lgamma, OpenVINO has no conversion rule for."""

    def call(self, x):
        import tensorflow as tf

        return tf.math.lgamma(tf.abs(x) + 1.0)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The demo's digits and a CNN trained on them (3 epochs), for top-1 agreement."""
    from sql_dl.cli.demo import render_digits, train_digits_cnn

    directory = tmp_path_factory.mktemp("digits")
    render_digits(directory / "digits")
    accuracy = train_digits_cnn(directory / "digits", directory / "digits.keras", epochs=3)
    assert accuracy > 0.9
    return directory


def test_float32_equals_keras_for_every_function_kind(spark, photos_dir, photos, cnn_file):
    sql_dl.bootstrap(spark, {
        "preprocessors": {"p": {"size": [32, 32], "mode": "caffe"}},
        "models": {"o": {"path": str(cnn_file), "preprocessor": "p", "engine": "openvino",
                         "features_layer": "embed"}},
        "images": {"photos": {"path": str(photos_dir)}}})
    rows = spark.sql("SELECT path, o(image) AS out, o_features(image) AS features, "
                     "o_top_k(image, 2) AS top FROM photos ORDER BY path").collect()
    model = keras.saving.load_model(cnn_file)
    x = np.concatenate([keras_tensor(local(r.path), (32, 32), mode="caffe") for r in rows])
    expected = model.predict(x, verbose=0)
    features = keras.Model(model.inputs, model.get_layer("embed").output).predict(x, verbose=0)
    for row, want, want_features in zip(rows, expected, features):
        assert np.abs(np.asarray(row.out) - want).max() <= 1e-4 * np.ptp(expected)
        assert np.abs(np.asarray(row.features) - want_features).max() <= 1e-4 * np.ptp(features)
        assert [t["class"] for t in row.top] == [str(i) for i in np.argsort(-want)[:2]]
    source = spark.sql("SELECT source FROM sql_dl_models WHERE function = 'o'").first().source
    assert source.endswith("; engine openvino, float32")
    assert len(list((cache_dir() / "openvino").iterdir())) >= 1  # converted once, kept


def test_bfloat16_stays_close_to_keras_on_a_trained_model(spark, digits):
    """Also beside the same model in float32 (one converted file, compiled twice), both
    loaded into each Python worker by the warm-up."""
    from sql_dl.executor.engines import bf16_native

    entry = {"path": str(digits / "digits.keras"), "preprocessor": "d", "engine": "openvino",
             "features_layer": "features"}
    sql_dl.bootstrap(spark, {
        "preprocessors": {"d": {"size": [32, 32], "mode": "scale"}},
        "models": {"b": {**entry, "precision": "bfloat16"}, "f": entry},
        "images": {"digits": {"path": str(digits / "digits")}}}, warm_up=True)
    rows = spark.sql("SELECT path, b_top_k(image, 1)[0].class AS best, b_features(image) AS f "
                     "FROM digits ORDER BY path").collect()
    f32 = spark.sql("SELECT f_features(image) AS f FROM digits ORDER BY path").collect()
    assert len(rows) == 1797
    model = keras.saving.load_model(digits / "digits.keras")
    x = np.concatenate([keras_tensor(local(r.path), (32, 32), mode="scale") for r in rows])
    best = model.predict(x, verbose=0).argmax(axis=1)
    features = keras.Model(model.inputs, model.get_layer("features").output).predict(x, verbose=0)
    agreement = np.mean([int(r.best) == b for r, b in zip(rows, best)])
    assert agreement >= 0.99, agreement
    ours = np.array([r.f for r in rows])
    error = np.linalg.norm(ours - features) / np.linalg.norm(features)
    assert error <= 0.03
    f32_error = np.linalg.norm(np.array([r.f for r in f32]) - features) / np.linalg.norm(
        features)
    assert f32_error <= 1e-5
    if bf16_native():  # elsewhere OpenVINO computes bfloat16 models in float32
        assert error > 100 * f32_error, (error, f32_error)
    source = spark.sql("SELECT source FROM sql_dl_models WHERE function = 'b'").first().source
    assert source.endswith("; engine openvino, bfloat16 (native on the driver's CPU)"
                           if bf16_native() else
                           "; engine openvino, bfloat16 (float32 speed on the driver's CPU: "
                           "no AVX512_BF16 or AMX)")


def test_a_model_openvino_cannot_convert_fails_at_bootstrap_naming_the_op(spark, tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(LogGamma()(keras.layers.Conv2D(2, 3)(inputs)))
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "lgamma.keras")
    with pytest.raises(ModelLoadError, match=(
            r"models\.g\.engine: OpenVINO cannot convert this model: No conversion rule found "
            r"for operations: Lgamma\. Use engine: keras for it\. Received: engine='openvino'")):
        sql_dl.bootstrap(spark, {"models": {"g": {"path": str(tmp_path / "lgamma.keras"),
                                                  "engine": "openvino"}}})


def test_validate_prints_each_log_line_once(cnn_file, tmp_path, monkeypatch):
    """Converting a model imports code that configures the root logger; sql-dl's own lines
    must still be printed once, not again as INFO:sql_dl...."""
    monkeypatch.setenv("SQL_DL_CACHE", str(tmp_path / "cache"))  # a conversion of its own
    manifest = tmp_path / "models.yaml"
    manifest.write_text(yaml.safe_dump({
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32", "engine": "openvino"}}}))
    result = run_cli("validate", manifest)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "Converted" in line] == [
        line for line in result.stderr.splitlines() if line.startswith("sql-dl: Converted")]
    assert len([line for line in result.stderr.splitlines() if "Converted" in line]) == 1
    assert "INFO:" not in result.stderr
