"""sql_dl.ml: read_images and the sparkdl-named transformers, against Keras run directly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers.data import CLASS_NAMES
from helpers.reference import keras_tensor, local, TOLERANCE

from sql_dl.ml import DeepImageFeaturizer, DeepImagePredictor, read_images


@pytest.fixture(scope="module")
def reference(cnn_file):
    import keras

    model = keras.saving.load_model(cnn_file)
    return model, keras.Model(model.inputs, model.get_layer("embed").output)


def keras_on(model, files, mode="caffe"):
    x = np.concatenate([keras_tensor(f, (32, 32), mode=mode) for f in files])
    return model.predict(x, verbose=0)


def test_read_images(spark, photos_dir, photos, tmp_path, cnn_file):
    frame = read_images(spark, str(photos_dir))
    assert frame.columns == ["path", "label", "image", "length", "modification_time"]
    rows = frame.orderBy("path").collect()
    assert [(local(r.path), r.label) for r in rows] == [(f, f.parent.name) for f in photos]

    sample = [r.path for r in read_images(spark, str(photos_dir), sample_ratio=0.5, seed=3).collect()]
    assert 0 < len(sample) < len(photos)
    assert sample == [r.path for r in read_images(spark, str(photos_dir), sample_ratio=0.5, seed=3).collect()]
    assert read_images(spark, str(photos_dir), num_partitions=3).rdd.getNumPartitions() == 3
    assert [local(r.path) for r in read_images(spark, str(photos_dir / "things"), recursive=False)
            .orderBy("path").collect()] == [f for f in photos if f.parent.name == "things"]

    mixed = tmp_path / "mixed" / "cats"
    mixed.mkdir(parents=True)
    shutil.copy(photos[0], mixed / "good.jpg")
    (mixed / "bad.jpg").write_bytes(b"not an image at all")
    (mixed / "truncated.jpg").write_bytes(photos[0].read_bytes()[:2000])
    kept = read_images(spark, str(mixed.parent), drop_invalid=True).collect()
    assert [local(r.path).name for r in kept] == ["good.jpg"]
    everything = read_images(spark, str(mixed.parent))
    assert everything.count() == 3
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", modelFile=str(cnn_file),
                                     imageSize=[32, 32], preprocessMode="caffe")
    features = {local(r.path).name: r.f for r in featurizer.transform(everything).collect()}
    assert features["bad.jpg"] is None and features["truncated.jpg"] is None
    assert len(features["good.jpg"]) == 8
    from pyspark.errors import PythonException

    strict = featurizer.copy().setParams(inputCol="path", onError="fail")
    with pytest.raises(PythonException, match=r"ImageDecodeError: cannot decode the image: .*"
                                              r"Received: path='file:.*/cats/(bad|truncated).jpg'"):
        strict.transform(everything).collect()


@pytest.mark.parametrize("argument, message", [
    ({"sample_ratio": 0}, r"sample_ratio must be a number in \(0, 1\]. Received: sample_ratio=0"),
    ({"num_partitions": 0}, r"num_partitions must be a positive integer. Received: num_partitions=0"),
])
def test_read_images_bad_arguments(spark, photos_dir, argument, message):
    with pytest.raises(ValueError, match=message):
        read_images(spark, str(photos_dir), **argument)


def test_featurizer_equals_the_features_layer(spark, photos_dir, photos, cnn_file, reference):
    frame = read_images(spark, str(photos_dir))
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelFile=str(cnn_file),
                                     imageSize=[32, 32], preprocessMode="caffe", batchSize=4)
    rows = featurizer.transform(frame).orderBy("path").collect()
    files = [local(r.path) for r in rows]
    assert files == photos
    np.testing.assert_allclose([r.features.toArray() for r in rows], keras_on(reference[1], files),
                               **TOLERANCE)
    by_path = featurizer.copy({featurizer.inputCol: "path"}).transform(frame).orderBy("path").collect()
    np.testing.assert_allclose([r.features.toArray() for r in by_path],
                               [r.features.toArray() for r in rows], **TOLERANCE)
    pool = DeepImageFeaturizer(inputCol="image", outputCol="f", modelFile=str(cnn_file),
                               preprocessMode="tf", featuresLayer="pool")  # imageSize: the model's
    import keras

    pool_model = keras.Model(reference[0].inputs, reference[0].get_layer("pool").output)
    rows = pool.transform(frame).orderBy("path").collect()
    np.testing.assert_allclose([r.f.toArray() for r in rows], keras_on(pool_model, files, "tf"),
                               **TOLERANCE)


def test_featurizer_reads_spark_image_structs(spark, photos_dir, photos, cnn_file, reference):
    frame = spark.read.format("image").load(str(photos_dir / "*" / "*.png"))
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelFile=str(cnn_file),
                                     imageSize=[32, 32], preprocessMode="caffe")
    rows = featurizer.transform(frame).orderBy("image.origin").collect()
    files = [local(r.image.origin) for r in rows]
    assert files == [f for f in photos if f.suffix == ".png"]
    np.testing.assert_allclose([r.features.toArray() for r in rows], keras_on(reference[1], files),
                               **TOLERANCE)


def test_predictor_vectors_and_decoded_predictions(spark, photos_dir, photos, cnn_file, labels_file,
                                                   reference):
    frame = read_images(spark, str(photos_dir))
    common = dict(inputCol="image", modelFile=str(cnn_file), imageSize=[32, 32], preprocessMode="caffe")
    vectors = DeepImagePredictor(outputCol="p", **common).transform(frame).orderBy("path").collect()
    expected = keras_on(reference[0], [local(r.path) for r in vectors])
    np.testing.assert_allclose([r.p.toArray() for r in vectors], expected, **TOLERANCE)

    decoded = DeepImagePredictor(outputCol="top", labels=str(labels_file), decodePredictions=True,
                                 topK=2, **common).transform(frame).orderBy("path").collect()
    for row, probabilities in zip(decoded, expected):
        order = np.argsort(-probabilities, kind="stable")[:2]
        assert [e["description"] for e in row.top] == [CLASS_NAMES[i] for i in order]
        np.testing.assert_allclose([e["probability"] for e in row.top], probabilities[order], **TOLERANCE)


def test_pipeline_with_transformers_saves_and_loads(spark, photos_dir, cnn_file, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import LogisticRegression
    from pyspark.sql import functions as F

    frame = read_images(spark, str(photos_dir)).withColumn(
        "y", F.when(F.col("label") == "animals", 1.0).otherwise(0.0))
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelFile=str(cnn_file),
                                     imageSize=[32, 32], preprocessMode="caffe")
    model = Pipeline(stages=[featurizer, LogisticRegression(labelCol="y", maxIter=5)]).fit(frame)
    model.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    stage = loaded.stages[0]
    assert isinstance(stage, DeepImageFeaturizer)
    assert (stage.getOrDefault("modelFile"), stage.getOrDefault("imageSize"),
            stage.getOrDefault("preprocessMode"), stage.getOrDefault("batchSize")) == (
        str(cnn_file), [32, 32], "caffe", 32)
    before = [r.prediction for r in model.transform(frame).orderBy("path").collect()]
    after = [r.prediction for r in loaded.transform(frame).orderBy("path").collect()]
    assert before == after


@pytest.mark.parametrize("params, message", [
    ({}, r"DeepImageFeaturizer: give exactly one of modelName or modelFile. Received: modelName=None, modelFile=None"),
    ({"modelName": "InceptionV3", "modelFile": "x.keras"}, r"give exactly one of modelName or modelFile"),
    ({"modelName": "InceptionV4"}, r"modelName must be a keras.applications image classifier \(known: .*\). Received: modelName='InceptionV4'"),
    ({"modelFile": "x.keras", "preprocessMode": "sepia"}, r"preprocessMode must be one of caffe, tf, torch, scale, none. Received: preprocessMode='sepia'"),
    ({"modelFile": "x.keras", "imageSize": [3]}, r"imageSize must be \[height, width\], two positive integers. Received: imageSize=\[3\]"),
    ({"modelFile": "x.keras", "batchSize": 0}, r"batchSize must be a positive integer. Received: batchSize=0"),
    ({"modelFile": "x.keras", "onError": "skip"}, r"onError must be one of null, fail. Received: onError='skip'"),
])
def test_featurizer_bad_params(spark, photos_dir, params, message):
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", **params)
    with pytest.raises(ValueError, match=message):
        featurizer.transform(read_images(spark, str(photos_dir)))


def test_transfer_learning_on_digit_classes_the_base_never_saw(spark, tmp_path):
    """A CNN trained on digits 0-4; its features + LogisticRegression classify 5-9."""
    import keras
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.sql import functions as F

    from sql_dl.cli.demo import render_digits

    render_digits(tmp_path / "digits")
    seen = sorted(f for d in "01234" for f in (tmp_path / "digits" / d).glob("*.png"))
    x = np.concatenate([keras_tensor(f, (32, 32), mode="scale") for f in seen])
    y = np.array([int(f.parent.name) for f in seen])
    keras.utils.set_random_seed(1)
    base = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="embed"),
        keras.layers.Dense(5, activation="softmax"),
    ])
    base.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    base.fit(x, y, epochs=5, batch_size=32, verbose=0)
    base_file = tmp_path / "base.keras"
    base.save(base_file)

    unseen = (read_images(spark, str(tmp_path / "digits"))
              .where(F.col("label").isin(*"56789"))
              .withColumn("y", F.col("label").cast("double") - 5))
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelFile=str(base_file),
                                     preprocessMode="scale", featuresLayer="embed")
    features = featurizer.transform(unseen).cache()
    train, test = features.randomSplit([0.7, 0.3], seed=0)
    model = LogisticRegression(labelCol="y", maxIter=200).fit(train)
    accuracy = MulticlassClassificationEvaluator(labelCol="y", metricName="accuracy").evaluate(
        model.transform(test))
    assert accuracy > 0.6, accuracy  # chance is 0.2

    rows = features.orderBy("path").limit(20).collect()
    embed = keras.Model(base.inputs, base.get_layer("embed").output)
    np.testing.assert_allclose([r.features.toArray() for r in rows],
                               keras_on(embed, [local(r.path) for r in rows], "scale"), **TOLERANCE)


@pytest.fixture(scope="module")
def dense_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3, 4)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="tanh")])
    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    model.save(path)
    return path


def test_keras_transformer_on_arrays(spark, dense_file):
    import keras

    from sql_dl.ml import KerasTransformer

    values = np.random.default_rng(1).normal(size=(6, 3, 4))
    frame = spark.createDataFrame([(i, v.reshape(-1).tolist(), v.tolist()) for i, v in enumerate(values)],
                                  "id int, flat array<double>, nested array<array<double>>")
    expected = keras.saving.load_model(dense_file).predict(values, verbose=0)
    for column in ("flat", "nested"):
        out = KerasTransformer(inputCol=column, outputCol="out", modelFile=str(dense_file)).transform(frame)
        assert out.schema["out"].dataType.simpleString() == "array<float>"
        np.testing.assert_allclose([r.out for r in out.orderBy("id").collect()], expected, **TOLERANCE)


def test_keras_image_file_transformer_and_its_persistence(spark, photos_dir, photos, cnn_file, tmp_path):
    import keras

    def load_for_tiny_cnn(uri):
        """The user's loader: decode, resize to 32x32, scale to 0..1 (runs on executors)."""
        import numpy as np
        from PIL import Image

        with Image.open(uri.removeprefix("file:")) as image:
            return np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0
    from pyspark.ml import PipelineModel

    from sql_dl.ml import KerasImageFileTransformer

    frame = read_images(spark, str(photos_dir)).select("path").union(
        spark.createDataFrame([("file:/no/such/image.png",)], "path string"))
    transformer = KerasImageFileTransformer(inputCol="path", outputCol="out", modelFile=str(cnn_file),
                                            imageLoader=load_for_tiny_cnn)
    rows = transformer.transform(frame).orderBy("path").collect()
    assert rows[0].path == "file:/no/such/image.png" and rows[0].out is None
    expected = keras.saving.load_model(cnn_file).predict(
        np.stack([load_for_tiny_cnn(str(f)) for f in photos]), verbose=0)
    np.testing.assert_allclose([r.out.toArray() for r in rows[1:]], expected, **TOLERANCE)

    PipelineModel(stages=[transformer]).write().overwrite().save(str(tmp_path / "p"))
    loaded = PipelineModel.load(str(tmp_path / "p")).stages[0]
    assert loaded.getOrDefault("imageLoader")("file:" + str(photos[0])).shape == (32, 32, 3)
    again = loaded.setParams(outputMode="array").transform(frame).orderBy("path").collect()
    np.testing.assert_allclose([r.out for r in again[1:]], expected, **TOLERANCE)

    with pytest.raises(ValueError, match=r"imageLoader must be a function uri -> ndarray. Received: imageLoader=None"):
        KerasImageFileTransformer(inputCol="path", outputCol="o", modelFile=str(cnn_file)).transform(frame)


def test_register_keras_image_udf_adds_sql_functions(spark, photos_dir, photos, cnn_file, reference):
    from sql_dl.ml import register_keras_image_udf, registerKerasImageUDF

    read_images(spark, str(photos_dir)).createOrReplaceTempView("ml_photos")
    register_keras_image_udf(spark, "deployed", reference[0], {"size": [32, 32], "mode": "caffe"})
    registerKerasImageUDF(spark, "deployed_file", str(cnn_file), {"size": [32, 32], "mode": "tf"})
    rows = spark.sql("SELECT path, deployed(image) AS a, deployed_features(image) AS f, "
                     "deployed_file(image) AS b FROM ml_photos ORDER BY path").collect()
    files = [local(r.path) for r in rows]
    np.testing.assert_allclose([r.a for r in rows], keras_on(reference[0], files), **TOLERANCE)
    np.testing.assert_allclose([r.f for r in rows], keras_on(reference[1], files), **TOLERANCE)
    np.testing.assert_allclose([r.b for r in rows], keras_on(reference[0], files, "tf"), **TOLERANCE)
    functions = {r.function for r in spark.table("sql_dl_models").collect()}
    assert {"deployed", "deployed_top_k", "deployed_file", "deployed_file_features"} <= functions


@pytest.mark.slow  # end to end: every transformer and function on a stream (45 s)
def test_streaming_gives_the_batch_values(spark, photos_dir, cnn_file, tmp_path, saved_model_dir):
    """Every transformer and every kind of SQL function, on a stream and in batch."""
    from pyspark.sql import functions as F

    from sql_dl.ml import (KerasImageFileTransformer, KerasTransformer, TFTransformer,
                           register_keras_image_udf)

    def loader(uri):
        import numpy as np
        from PIL import Image

        with Image.open(uri.removeprefix("file:")) as image:
            return np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0

    register_keras_image_udf(spark, "streamed", str(cnn_file), {"size": [32, 32], "mode": "caffe"})
    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features", modelFile=str(cnn_file),
                                     imageSize=[32, 32], preprocessMode="caffe")
    predictor = DeepImagePredictor(inputCol="content", outputCol="top", modelFile=str(cnn_file),
                                   imageSize=[32, 32], preprocessMode="caffe", decodePredictions=True,
                                   topK=2)

    on_files = KerasImageFileTransformer(inputCol="path", outputCol="by_loader", modelFile=str(cnn_file),
                                         imageLoader=loader, outputMode="array")
    on_arrays = KerasTransformer(inputCol="tensor", outputCol="by_array", modelFile=str(cnn_file))
    on_signature = TFTransformer(modelDir=str(saved_model_dir), inputMapping={"x3": "x", "y22": "y"},
                                 outputMapping={"a": "tf_a", "b": "tf_b"})
    columns = ["sql_out", "sql_features", "tensor", "by_loader", "by_array", "tf_a", "tf_b"]

    def pipeline(frame):
        frame = frame.select(
            "path", "content", F.expr("streamed(content)").alias("sql_out"),
            F.expr("streamed_features(content)").alias("sql_features"),
            F.expr("streamed_top_k(content, 3)").alias("sql_top"),
            F.expr("streamed_preprocessor(content)").alias("tensor"))
        frame = frame.withColumn("x3", F.slice("tensor", 1, 3)).withColumn(
            "y22", F.array(F.slice("tensor", 4, 2), F.slice("tensor", 6, 2)))
        for transformer in (featurizer, predictor, on_files, on_arrays, on_signature):
            frame = transformer.transform(frame)
        return frame.select("path", "features", "top", "sql_top", *columns)

    schema = "path string, modificationTime timestamp, length long, content binary"  # the manual's
    stream = spark.readStream.format("binaryFile").schema(schema).load(str(photos_dir / "*" / "*"))
    query = (pipeline(stream).writeStream.format("parquet")
             .option("checkpointLocation", str(tmp_path / "checkpoint"))
             .option("path", str(tmp_path / "out")).trigger(availableNow=True).start())
    query.awaitTermination(300)
    streamed = spark.read.parquet(str(tmp_path / "out")).orderBy("path").collect()
    batch = pipeline(spark.read.format("binaryFile").load(str(photos_dir / "*" / "*"))).orderBy("path").collect()
    assert [r.path for r in streamed] == [r.path for r in batch] and len(batch) == 9
    for s, b in zip(streamed, batch):
        for column in columns:
            np.testing.assert_allclose(s[column], b[column], **TOLERANCE)
        np.testing.assert_allclose(s.by_array, s.sql_out, **TOLERANCE)  # the same model twice
        np.testing.assert_allclose(s.features.toArray(), b.features.toArray(), **TOLERANCE)
        assert [e["class"] for e in s.top] == [e["class"] for e in b.top]
        assert [e["class"] for e in s.sql_top] == [e["class"] for e in b.sql_top]


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    import tensorflow as tf

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(2).normal(size=(3, 2)), dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                      tf.TensorSpec([None, 2, 2], tf.float32, name="y")])
        def serve(self, x, y):
            return {"a": tf.matmul(x, self.w),
                    "b": tf.reshape(y, [-1, 4]) * 2.0 + tf.reduce_sum(x, axis=1, keepdims=True)}

    module = Module()
    path = tmp_path_factory.mktemp("tf") / "saved"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_tf_transformer_matches_tensorflow(spark, saved_model_dir, tmp_path):
    import tensorflow as tf
    from pyspark.ml import PipelineModel

    from sql_dl.ml import TFTransformer

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 2, 2))
    frame = spark.createDataFrame(
        [(i, x[i].tolist(), y[i].tolist()) for i in range(7)] + [(7, None, y[0].tolist())],
        "id int, xs array<double>, ys array<array<double>>")
    transformer = TFTransformer(modelDir=str(saved_model_dir), inputMapping={"xs": "x", "ys": "y"},
                                outputMapping={"a": "out_a", "b": "out_b"}, batchSize=3)
    rows = transformer.transform(frame).orderBy("id").collect()
    # the signature run directly, one row at a time as a reference
    function = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    for i in range(7):
        expected = function(x=tf.constant(x[i:i + 1], tf.float32), y=tf.constant(y[i:i + 1], tf.float32))
        np.testing.assert_allclose(rows[i].out_a, expected["a"].numpy()[0], **TOLERANCE)
        np.testing.assert_allclose(rows[i].out_b, expected["b"].numpy().reshape(-1), **TOLERANCE)
    assert (rows[7].out_a, rows[7].out_b) == (None, None)

    PipelineModel(stages=[transformer]).write().overwrite().save(str(tmp_path / "tf"))
    loaded = PipelineModel.load(str(tmp_path / "tf"))
    assert [r.out_a for r in loaded.transform(frame).orderBy("id").collect()] == [r.out_a for r in rows]

    with pytest.raises(ValueError, match=r"signature 'serving_default' has no input z \(inputs: x, y\)"):
        TFTransformer(modelDir=str(saved_model_dir), inputMapping={"xs": "z"},
                      outputMapping={"a": "o"}).transform(frame)


def test_featurizer_with_a_keras_application(spark, photos_dir, photos, tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("SQL_DL_CACHE", str(tmp_path / "cache"))
    keras.utils.set_random_seed(12)
    weights = tmp_path / "mobilenet_v2.weights.h5"
    keras.applications.MobileNetV2(weights=None).save_weights(weights)
    frame = read_images(spark, str(photos_dir / "animals"))
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV2",
                                     weights=str(weights))
    rows = featurizer.transform(frame).orderBy("path").collect()
    model = keras.applications.MobileNetV2(weights=str(weights))
    pooled = keras.Model(model.inputs, model.layers[-2].output)
    files = [local(r.path) for r in rows]
    x = np.concatenate([keras_tensor(f, (224, 224), mode="tf") for f in files])  # its own size, mode
    np.testing.assert_allclose([r.f.toArray() for r in rows], pooled.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_every_transformer_saves_and_loads_its_params(tmp_path, cnn_file, saved_model_dir):
    from sql_dl.ml import KerasImageFileTransformer, KerasTransformer, TFTransformer

    transformers = [
        DeepImageFeaturizer(inputCol="i", outputCol="o", modelName="InceptionV3", weights="none",
                            featuresLayer="avg_pool", batchSize=8, onError="fail"),
        DeepImagePredictor(inputCol="i", outputCol="o", modelFile=str(cnn_file), imageSize=[32, 32],
                           preprocessMode="torch", labels="l.txt", decodePredictions=True, topK=3),
        KerasTransformer(inputCol="i", outputCol="o", modelFile=str(cnn_file), batchSize=4),
        KerasImageFileTransformer(inputCol="i", outputCol="o", modelFile=str(cnn_file),
                                  imageLoader=lambda uri: uri.upper(), outputMode="array"),
        TFTransformer(modelDir=str(saved_model_dir), inputMapping={"a": "x", "b": "y"},
                      outputMapping={"a": "p"}, signature="serving_default", batchSize=2),
    ]
    for i, transformer in enumerate(transformers):
        transformer.write().overwrite().save(str(tmp_path / str(i)))
        loaded = type(transformer).load(str(tmp_path / str(i)))
        expected = {p.name: v for p, v in transformer.extractParamMap().items()}
        actual = {p.name: v for p, v in loaded.extractParamMap().items()}
        loader = expected.pop("imageLoader", None)
        if loader is not None:
            assert actual.pop("imageLoader")("file:x") == "FILE:X"
        assert actual == expected, type(transformer).__name__
