"""Test data made in the test run: real photos from scikit-image and scikit-learn, hostile
image bytes, and a tiny Keras model. Nothing is downloaded."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

PHOTO_SIZE = (32, 32)
NUM_CLASSES = 5
CLASS_NAMES = ["cat", "dog", "fish", "bird", "frog"]
# The functions every manifest registers, sorted.
BUILT_IN = ["sql_dl_image_error", "sql_dl_image_info", "sql_dl_thumbnail"]
# Spark's file sources never list empty files, so empty.jpg is in no view.
UNDECODABLE = ("random.jpg", "truncated.jpg", "text.png", "bomb.png")


def photo_files(directory: Path) -> list[Path]:
    """Writes real photos from scikit-image and scikit-learn in several modes and formats."""
    import sklearn.datasets
    import skimage.data
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "animals").mkdir(exist_ok=True)
    (directory / "things").mkdir(exist_ok=True)
    chelsea = Image.fromarray(skimage.data.chelsea())
    camera = Image.fromarray(skimage.data.camera())
    writes = {
        "animals/astronaut.jpg": (Image.fromarray(skimage.data.astronaut()), {"quality": 90}),
        "animals/chelsea_rgba.png": (chelsea.convert("RGBA"), {}),
        "animals/cat_palette.png": (Image.fromarray(skimage.data.cat()).convert("P"), {}),
        "things/coffee.png": (Image.fromarray(skimage.data.coffee()), {}),
        "things/camera_l.png": (camera, {}),
        "things/camera_l.jpg": (camera, {"quality": 85}),
        "things/rocket_small.png": (Image.fromarray(skimage.data.rocket()).resize((32, 32)), {}),
    }
    files = []
    for name, (image, options) in writes.items():
        image.save(directory / name, **options)
        files.append(directory / name)
    sample_dir = Path(sklearn.datasets.__file__).parent / "images"
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(sample_dir / name, directory / "things" / name)
        files.append(directory / "things" / name)
    return sorted(files)


def png_bomb(side: int = 100_000) -> bytes:
    """A PNG whose header claims side x side pixels (a decompression bomb's header)."""
    import io
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def decoded(url: str):
    """The image a ``data:image/...;base64`` URL carries (a PIL image), its format checked
    against the URL's type."""
    import base64
    import io

    from PIL import Image

    kind, data = re.fullmatch(r"data:image/(jpeg|png);base64,([A-Za-z0-9+/=]+)", url).groups()
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format.lower() == kind
    return image


def tiny_cnn(input_shape=(*PHOTO_SIZE, 3), num_classes=NUM_CLASSES, seed=7):
    """A small CNN with a named features layer; deterministic for a seed."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(8, activation="tanh", name="embed")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs)


def digit_loader(side: int = 16):
    """The user's loader; the same decoding as PREPROCESSOR, so SQL must agree with it."""
    def load_digit(uri):
        import numpy as np
        from PIL import Image

        with Image.open(uri.removeprefix("file:")) as image:
            resized = image.convert("RGB").resize((side, side), Image.Resampling.NEAREST)
            return np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    return load_digit
