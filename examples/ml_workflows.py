"""Every row of the sparkdl table in docs/notebooks.md, as written there, on data and models
this script makes itself (offline): ``python examples/ml_workflows.py``. tests/test_docs.py runs it and
checks that the manual quotes it.

With real ImageNet weights, set ``weights = "imagenet"`` (Keras downloads them when online)
or the path of a weights file, and ``labels = "imagenet"``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.sql import functions as F
from sklearn.datasets import load_digits

import sql_dl
from sql_dl.ml import (DeepImageFeaturizer, DeepImagePredictor, KerasImageFileTransformer,
                       KerasTransformer, TFTransformer, read_images, register_keras_image_udf)


def make_inputs() -> None:
    """In the current directory: data/flowers/<label>/*.png (300 scikit-learn digits under
    two labels), m.keras (a small CNN), an InceptionV3 weights file and its labels, and
    saved/ (a SavedModel with a signature ``scores(xs)``)."""
    digits = load_digits()
    for i in range(300):
        folder = Path("data/flowers") / ("daisy" if digits.target[i] < 5 else "tulip")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[i] * 15).astype(np.uint8)
        Image.fromarray(pixels).resize((64, 64)).convert("RGB").save(folder / f"{i:03d}.png")
    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                      keras.layers.GlobalAveragePooling2D(name="features"),
                      keras.layers.Dense(2, activation="softmax")]).save("m.keras")
    keras.applications.InceptionV3(weights=None).save_weights("inception_v3.weights.h5")
    Path("labels.txt").write_text("".join(f"class_{i}\n" for i in range(1000)))

    class Scores(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def scores(self, xs):
            return {"scores": tf.reduce_sum(xs, axis=1, keepdims=True)}

    module = Scores()
    tf.saved_model.save(module, "saved", signatures={"serving_default": module.scores})


def load_fn(uri: str) -> np.ndarray:
    """The image loader of KerasImageFileTransformer: a URI in, an (H, W, 3) array out."""
    with Image.open(uri.removeprefix("file:")) as image:
        return np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0


def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="sql_dl-example-"))
    make_inputs()
    weights, labels = "inception_v3.weights.h5", "labels.txt"
    spark = sql_dl.session(master="local[2]", home="home")

    df = read_images(spark, "data/flowers", recursive=True, sample_ratio=0.1)
    train = df.withColumn("y", (F.col("label") == "daisy").cast("double"))
    model = Pipeline(stages=[DeepImageFeaturizer(inputCol="image", outputCol="features", modelName="InceptionV3", weights=weights), LogisticRegression(labelCol="y")]).fit(train)  # noqa: E501
    print("transfer learning:", model.transform(train).select("prediction").count(), "rows")

    top = DeepImagePredictor(inputCol="image", outputCol="predicted_labels", modelName="InceptionV3", weights=weights, labels=labels, decodePredictions=True, topK=10).transform(df)  # noqa: E501
    print("top 10:", len(top.first().predicted_labels), "classes")

    files = df.withColumnRenamed("path", "uri")
    preds = KerasImageFileTransformer(inputCol="uri", outputCol="preds", modelFile="m.keras", imageLoader=load_fn).transform(files)  # noqa: E501
    print("image files:", preds.first().preds)

    features = spark.createDataFrame([([1.0, 2.0, 3.0, 4.0],)], "features array<float>")
    model_on_arrays = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model_on_arrays.save("arrays.keras")
    out = KerasTransformer(inputCol="features", outputCol="out", modelFile="arrays.keras").transform(features)  # noqa: E501
    print("arrays:", out.first().out)

    x = spark.createDataFrame([([1.0, 2.0, 3.0, 4.0],)], "x array<float>")
    scored = TFTransformer(modelDir="saved/", inputMapping={"x": "xs"}, outputMapping={"scores": "out"}).transform(x)  # noqa: E501
    print("SavedModel:", scored.first().out)

    model = keras.saving.load_model("m.keras")
    register_keras_image_udf(spark, "my_model", model, {"size": [32, 32], "mode": "scale"})
    df.createOrReplaceTempView("flowers")
    row = spark.sql("SELECT my_model_top_k(image, 1)[0].probability AS p, "
                    "size(my_model_preprocessor(image)) AS n FROM flowers").first()
    print("SQL:", row.p, row.n)
    spark.stop()


if __name__ == "__main__":
    sys.exit(main())
