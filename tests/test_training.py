"""Training in Spark tasks: KerasImageFileEstimator under CrossValidator, publish, sql-dl train."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from pyspark.sql import functions as F
from helpers.data import digit_loader
from helpers.processes import run_cli
from helpers.reference import local, TOLERANCE

import sql_dl
from sql_dl.cli.demo import render_digits
from sql_dl.ml import AccuracyEvaluator, KerasImageFileEstimator, read_images

CLASSES = ("0", "1", "2", "3", "4")
SIDE = 16
PREPROCESSOR = {"size": [SIDE, SIDE], "mode": "scale", "interpolation": "nearest"}


def dense_model(path: Path, side: int = SIDE, seed: int = 1) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    keras.Sequential([keras.Input((side, side, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(32, activation="relu", name="features"),
                      keras.layers.Dense(len(CLASSES), activation="softmax", name="probs")]).save(path)
    return path


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("digits")
    render_digits(directory)
    for folder in directory.iterdir():
        if folder.is_dir() and folder.name not in CLASSES:
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()
    return directory


@pytest.fixture(scope="module")
def digits(spark, digits_dir):
    return read_images(spark, str(digits_dir)).withColumn("label_index", F.col("label").cast("int"))


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    return dense_model(tmp_path_factory.mktemp("base") / "base.keras")


def estimator(base_model: Path, model_dir: Path, **params) -> KerasImageFileEstimator:
    return KerasImageFileEstimator(inputCol="path", outputCol="prediction", labelCol="label_index",
                                   modelFile=str(base_model), imageLoader=digit_loader(),
                                   modelDir=str(model_dir), **params)


@pytest.fixture(scope="module")
def tuned(spark, digits, base_model, tmp_path_factory):
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    est = estimator(base_model, tmp_path_factory.mktemp("trained"))
    grid = (ParamGridBuilder()
            .addGrid(est.kerasFitParams, [{"epochs": 4, "batch_size": 16, "learning_rate": 0.01},
                                          {"epochs": 4, "batch_size": 16, "learning_rate": 1e-6}])
            .addGrid(est.kerasOptimizer, ["adam", "rmsprop"])
            .build())
    evaluator = AccuracyEvaluator(predictionCol="prediction", labelCol="label_index")
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2,
                        parallelism=2, seed=0)
    return grid, cv.fit(digits)


def test_cross_validator_chooses_the_better_setting_trained_in_executors(tuned, digits):
    grid, model = tuned
    rates = [next(v for p, v in m.items() if p.name == "kerasFitParams")["learning_rate"]
             for m in grid]
    best = int(np.argmax(model.avgMetrics))
    assert rates[best] == 0.01
    fast = [m for m, rate in zip(model.avgMetrics, rates) if rate == 0.01]
    slow = [m for m, rate in zip(model.avgMetrics, rates) if rate == 1e-6]
    assert min(fast) > 0.8 and max(slow) < 0.5, model.avgMetrics
    assert model.bestModel.trainedBy != os.getpid()  # a Python worker of an executor trained it
    scored = AccuracyEvaluator(predictionCol="prediction", labelCol="label_index").evaluate(
        model.bestModel.transform(digits))
    assert scored > 0.8


def test_training_sets_go_under_the_driver_s_temporary_directory_and_are_removed(spark, tuned):
    """Not under the warehouse directory, which for a session built without sql_dl.session
    is ``spark-warehouse`` in the current directory: on a local master, under the driver's
    temporary directory (removed with the JVM), and each set is removed after its fit."""
    from sql_dl.driver.training import staging_dir
    from sql_dl.spark import internals

    root = internals.spark_temp_dir(spark) / "sql_dl" / "training"
    assert Path(staging_dir(spark, None)).parent == root
    assert root.is_dir() and list(root.iterdir()) == []  # the tuned fits wrote there, then removed
    assert staging_dir(spark, "hdfs://nn/tmp").startswith("hdfs://nn/tmp/")


CROSS_VALIDATION = """
import os
import sys
sys.path.insert(0, sys.argv[1])
import sql_dl
from sql_dl.ml import read_images
from helpers.data import digit_loader
from helpers.processes import doc_blocks

spark = sql_dl.session(master="local[2]", home=sys.argv[2], jvm_log=sys.argv[3],
                       conf={"spark.ui.enabled": "false"})
df = read_images(spark, sys.argv[5]).selectExpr("path AS uri", "CAST(label AS INT) AS label_index")
load_img_fn = digit_loader()
os.chdir(os.path.dirname(sys.argv[4]))  # where base.keras is
exec(doc_blocks("**Tune with Spark ML.**", 1)[0])  # the manual's example, as written
print(best.avgMetrics)
spark.stop()
"""


@pytest.mark.slow
def test_the_readme_cross_validation_runs_and_prints_no_training_warnings(digits_dir, base_model,
                                                                          tmp_path):
    """The manual's tuning example: eight fits, two at a time in the same Python workers.
    Keras and TensorFlow have nothing to warn of (no data running out, no ignored shuffle, no
    tf.function retracing)."""
    import subprocess
    import sys

    log = tmp_path / "spark.log"
    script = tmp_path / "cv.py"
    script.write_text(CROSS_VALIDATION)
    result = subprocess.run([sys.executable, script, Path(__file__).parent, tmp_path / "home", log,
                             base_model, digits_dir], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stderr + log.read_text()
    for warning in ("ran out of data", "shuffle=True", "retracing", "Traceback", "Warning:",
                    "WARNING:tensorflow", " WARN ", " ERROR "):
        assert warning not in output, output
    metrics = eval(result.stdout)
    assert len(metrics) == 4 and all(0 <= m <= 1 for m in metrics), metrics


def test_published_model_answers_in_sql_as_keras_does(spark, tuned, digits_dir, tmp_path):
    import keras

    manifest = tmp_path / "models.yaml"
    manifest.write_text("# the team's manifest\nimages:\n  digits: {path: %s}  # five classes\n"
                        % digits_dir)
    _, model = tuned
    written = sql_dl.publish(model.bestModel, manifest, "digit_net", preprocessor=PREPROCESSOR,
                             labels=CLASSES)
    assert written == tmp_path / "models" / "digit_net.keras"
    text = manifest.read_text()
    assert "# the team's manifest" in text and "# five classes" in text  # comments kept
    assert yaml.safe_load(text)["models"]["digit_net"] == {
        "path": "models/digit_net.keras", "preprocessor": "digit_net_input",
        "labels": "models/digit_net.labels.txt"}

    sql_dl.bootstrap(spark, manifest)
    rows = spark.sql("SELECT path, digit_net(image) AS p, digit_net_top_k(image, 2) AS top "
                     "FROM digits ORDER BY path LIMIT 60").collect()
    files = [local(r.path) for r in rows]
    expected = keras.saving.load_model(written).predict(
        np.stack([digit_loader()(str(f)) for f in files]), verbose=0)
    np.testing.assert_allclose([r.p for r in rows], expected, **TOLERANCE)
    assert [r.top[0]["class"] for r in rows] == [CLASSES[i] for i in expected.argmax(axis=1)]

    with pytest.raises(sql_dl.ManifestError, match=r"models.digit_net: an entry of that name "
                                                   r"exists; choose another name or replace it"):
        sql_dl.publish(written, manifest, "digit_net")
    with pytest.raises(sql_dl.ModelLoadError, match=r"models.other.preprocessor: preprocessor "
                                                    r"'other_input' resizes to \[8, 8\]"):
        sql_dl.publish(written, manifest, "other", preprocessor={"size": [8, 8], "mode": "scale"})
    assert "other" not in manifest.read_text() and not (tmp_path / "models" / "other.keras").exists()


def test_index_and_one_hot_labels_train_the_same_model_given_a_seed(spark, digits, base_model,
                                                                    tmp_path):
    from pyspark.ml.functions import array_to_vector

    small = digits.where("label_index < 3 AND path LIKE '%1.png'")
    one_hot = small.withColumn("one_hot", array_to_vector(F.transform(
        F.sequence(F.lit(0), F.lit(len(CLASSES) - 1)),
        lambda i: F.when(i == F.col("label_index"), 1.0).otherwise(0.0))))
    params = {"kerasFitParams": {"epochs": 2, "batch_size": 8}, "seed": 3}
    by_index = estimator(base_model, tmp_path, **params).fit(small)
    by_vector = estimator(base_model, tmp_path, **params).setParams(labelCol="one_hot").fit(one_hot)
    sparse = estimator(base_model, tmp_path, kerasLoss="sparse_categorical_crossentropy",
                       **params).fit(small)
    outputs = [np.array([r.prediction.toArray() for r in m.transform(small).orderBy("path").collect()])
               for m in (by_index, by_vector, sparse)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_allclose(outputs[0], outputs[2], rtol=1e-4, atol=1e-6)
    assert by_index.history["loss"][-1] < by_index.history["loss"][0]


@pytest.mark.parametrize("labels, message", [
    ("label_index + 3", r"labelCol 'bad' holds class indices, which must be whole numbers from 0 "
                        r"to 4 for a model with 5 outputs. Received: min=3, max=7"),
    ("label_index + 0.5", r"labelCol .bad. holds class indices.*Received: min=0.5, max=4.5, \d+ fractional value"),
    ("array(1.0, 0.0)", r"labelCol 'bad' holds vectors of 2 to 2 values, but the model has 5 outputs"),
    ("label", r"labelCol 'bad' must hold class indices \(a number\) or one-hot vectors .* "
              r"Received: string"),
])
def test_labels_that_do_not_fit_the_model_fail_at_fit(digits, base_model, tmp_path, labels, message):
    frame = digits.withColumn("bad", F.expr(labels))
    with pytest.raises(ValueError, match=rf"KerasImageFileEstimator: {message}"):
        estimator(base_model, tmp_path).setParams(labelCol="bad").fit(frame)


@pytest.mark.parametrize("params, message", [
    ({"kerasOptimizer": "adamm"}, r"kerasOptimizer is not a Keras name: .* Received: kerasOptimizer='adamm'"),
    ({"kerasLoss": "nope"}, r"kerasLoss is not a Keras name"),
    ({"kerasFitParams": [1]}, r"kerasFitParams must be a dict of model.fit arguments"),
    ({"imageLoader": None}, r"imageLoader must be a function uri -> ndarray"),
])
def test_bad_params_fail_before_any_job(digits, base_model, tmp_path, params, message):
    with pytest.raises(ValueError, match=rf"KerasImageFileEstimator: {message}"):
        estimator(base_model, tmp_path).setParams(**params).fit(digits)


def test_training_data_never_reaches_the_driver(spark, digits, tmp_path):
    """A 64x64 loader makes ~45 MB of training data; the driver process must not hold it."""
    import keras

    side = 64
    keras.utils.set_random_seed(2)
    model = tmp_path / "pooled.keras"  # a model of a few weights: only data could be large
    keras.Sequential([keras.Input((side, side, 3)), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(len(CLASSES), activation="softmax")]).save(model)
    est = KerasImageFileEstimator(inputCol="path", outputCol="prediction", labelCol="label_index",
                                  modelFile=str(model), imageLoader=digit_loader(side),
                                  kerasFitParams={"epochs": 1, "batch_size": 64},
                                  modelDir=str(tmp_path))
    data_bytes = digits.count() * side * side * 3 * 4
    status = Path("/proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")  # peak resident memory := current
    before = int(status.read_text().split("VmRSS:")[1].split()[0]) * 1024
    est.fit(digits)
    peak = int(status.read_text().split("VmHWM:")[1].split()[0]) * 1024
    assert data_bytes > 40e6
    assert peak - before < data_bytes / 4, (peak - before, data_bytes)


@pytest.mark.slow
def test_sql_dl_train_end_to_end(spark, digits_dir, base_model, tmp_path):
    import keras

    manifest = tmp_path / "models.yaml"
    manifest.write_text(yaml.safe_dump({
        "preprocessors": {"p16": PREPROCESSOR},
        "models": {"base": {"path": str(base_model), "preprocessor": "p16"}},
        "images": {"digits": {"path": str(digits_dir)}}}))
    out = tmp_path / "trained" / "head.keras"
    result = run_cli("train", "--manifest", manifest, "--base", "base", "--view", "digits", "--out",
                     out, "--register", "digit_head", "--epochs", "15", "--learning-rate", "0.01",
                     "--master", "local[2]", "--home", tmp_path / "home")
    assert result.returncode == 0, result.stderr
    worker_output = result.stderr + (tmp_path / "home" / "logs" / "spark.log").read_text()
    for warning in ("ran out of data", "shuffle=True", "retracing", "Traceback"):
        assert warning not in worker_output  # fit is fed so that Keras has nothing to warn of
    lines = result.stdout.splitlines()
    assert lines[0].startswith("trained digit_head: 5 classes, ")
    assert lines[1] == f"wrote {out}; added models.digit_head to {manifest}"
    entry = yaml.safe_load(manifest.read_text())["models"]["digit_head"]
    assert entry == {"path": "trained/head.keras", "preprocessor": "p16",
                     "labels": "trained/head.labels.txt"}  # relative to the manifest
    assert out.with_name("head.labels.txt").read_text() == "".join(f"{c}\n" for c in CLASSES)

    held_out = [r.path for r in read_images(spark, str(digits_dir)).where(
        "pmod(xxhash64(path, 0), 1000) < 200").collect()]
    files = [local(p) for p in held_out]
    predicted = keras.saving.load_model(out).predict(
        np.stack([digit_loader()(str(f)) for f in files]), verbose=0).argmax(axis=1)
    accuracy = np.mean([CLASSES[i] == f.parent.name for i, f in zip(predicted, files)])
    assert lines[0].endswith(f"held-out accuracy {accuracy:.3f} on {len(files)} images")
    assert accuracy > 0.7


def test_sql_dl_publish_command(base_model, tmp_path):
    manifest = tmp_path / "models.yaml"
    manifest.write_text("# models the BI team uses\nmodels: {}\n")
    labels = tmp_path / "classes.txt"
    labels.write_text("".join(f"{c}\n" for c in CLASSES))
    result = run_cli("publish", "--manifest", manifest, "--model", base_model, "--name", "pub",
                     "--size", "16", "16", "--mode", "scale", "--labels", labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {tmp_path / 'models' / 'pub.keras'}; added models.pub to {manifest}\n"
    assert manifest.read_text().startswith("# models the BI team uses\n")
    document = yaml.safe_load(manifest.read_text())
    assert document["preprocessors"] == {"pub_input": {"size": [16, 16], "mode": "scale"}}
    # the labels file is copied beside the model, as the docs say: the two travel together
    assert document["models"]["pub"] == {"path": "models/pub.keras", "preprocessor": "pub_input",
                                         "labels": "models/pub.labels.txt"}
    assert (tmp_path / "models" / "pub.labels.txt").read_text() == labels.read_text()
    assert (tmp_path / "models" / "pub.keras").read_bytes() == base_model.read_bytes()
    assert run_cli("validate", manifest).returncode == 0

    missing = run_cli("publish", "--manifest", manifest, "--model", base_model, "--name", "pub2",
                      "--size", "16", "16", "--mode", "scale", "--labels", tmp_path / "nope.txt")
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith(
        f"Error: {manifest}: models.pub2.labels: no such file; give a text file with one label "
        f"per line. Received: labels='{tmp_path / 'nope.txt'}'")
    assert not (tmp_path / "models" / "pub2.keras").exists()  # nothing written

    again = run_cli("publish", "--manifest", manifest, "--model", base_model, "--name", "pub")
    assert again.returncode == 1
    assert again.stderr.strip().endswith(f"Error: {manifest}: models.pub: an entry of that name "
                                         "exists; choose another name or replace it (replace=True, "
                                         "--replace)")


def test_estimator_saves_and_loads_with_its_loader(spark, base_model, digits_dir, tmp_path):
    est = estimator(base_model, tmp_path, kerasFitParams={"epochs": 2, "learning_rate": 0.01},
                    kerasOptimizer="sgd", seed=5)
    est.write().overwrite().save(str(tmp_path / "est"))
    loaded = KerasImageFileEstimator.load(str(tmp_path / "est"))
    for name in ("inputCol", "outputCol", "labelCol", "modelFile", "kerasOptimizer", "kerasLoss",
                 "kerasFitParams", "seed", "modelDir"):
        assert loaded.getOrDefault(name) == est.getOrDefault(name), name
    uri = f"file:{next(digits_dir.glob('0/*.png'))}"
    np.testing.assert_array_equal(loaded.getOrDefault("imageLoader")(uri), digit_loader()(uri))
