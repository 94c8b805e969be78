"""The independent references: what Keras's documented calls give on the same files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.data import CLASS_NAMES

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def local(uri: str) -> Path:
    """The local path of a ``file:`` URI (an image view's ``path``)."""
    return Path(uri.removeprefix("file:"))


def keras_tensor(path, size, interpolation="bilinear", mode="none"):
    """What Keras's load_img, img_to_array and preprocess_input give for one file."""
    import keras

    image = keras.utils.load_img(path, color_mode="rgb", target_size=size,
                                 interpolation=interpolation)
    x = keras.utils.img_to_array(image, dtype="float32")[None]
    if mode == "scale":
        return x / 255.0
    if mode == "none":
        return x
    return keras.applications.imagenet_utils.preprocess_input(x, mode=mode)


def keras_outputs(model, files, mode, interpolation="bilinear", size=(32, 32)):
    """``model`` (a Keras model, or a model file) run directly on ``files``."""
    import keras

    if isinstance(model, (str, Path)):
        model = keras.saving.load_model(model)
    x = np.concatenate([keras_tensor(f, size, interpolation, mode) for f in files])
    return model.predict(x, verbose=0)


def expected_best(cnn_file, files) -> list[str]:
    """The most probable class of each file by the tiny CNN with caffe preprocessing."""
    outputs = keras_outputs(cnn_file, files, "caffe")
    return [CLASS_NAMES[i] for i in outputs.argmax(axis=1)]


def assert_equal_keras(rows, photos, cnn_file) -> None:
    """``rows`` of ``(path, cnn(image), cnn_top_k(image, 1)[0].class)`` in path order (the
    output as JSON text, as JDBC and spark-sql give it, or a list) are the photos, with the
    tiny CNN's outputs and best classes by Keras on the same files."""
    import json

    files = [local(r[0]) for r in rows]
    assert files == photos
    outputs = [json.loads(r[1]) if isinstance(r[1], str) else r[1] for r in rows]
    np.testing.assert_allclose(outputs, keras_outputs(cnn_file, files, "caffe"), **TOLERANCE)
    assert [r[2] for r in rows] == expected_best(cnn_file, files)
