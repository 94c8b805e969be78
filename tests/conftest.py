"""Shared fixtures: one SparkSession, real photos in several modes and formats, tiny models."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

# The suite's own temporary directory, Keras home and model cache, for the driver, the JVM
# (sql_dl.session passes TMPDIR on as java.io.tmpdir) and the Python workers (they inherit
# the environment): nothing depends on, or is disturbed by, what else runs on the machine.
SUITE_TMP = Path(tempfile.mkdtemp(prefix="sql_dl-tests-"))
os.environ.update({"TMPDIR": str(SUITE_TMP), "SPARK_LOCAL_DIRS": str(SUITE_TMP),
                   "KERAS_HOME": str(SUITE_TMP / "keras"), "SQL_DL_CACHE": str(SUITE_TMP / "cache"),
                   "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
tempfile.tempdir = None  # re-read TMPDIR
# The suite starts many short-lived driver JVMs (sessions, sql-dl sql and serve): without the
# optimizing JIT and with the serial collector they spend less of the two cores compiling and
# collecting (the whole suite took 8% less time). spark-submit adds these to the driver's
# java command; executors and user sessions are unaffected.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")

PHOTO_SIZE = (32, 32)
NUM_CLASSES = 5
CLASS_NAMES = ["cat", "dog", "fish", "bird", "frog"]
# The functions every manifest registers, sorted.
BUILT_IN = ["sql_dl_image_error", "sql_dl_image_info", "sql_dl_thumbnail"]


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


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_blocks(heading: str, count: int) -> list[str]:
    """The first ``count`` fenced code blocks after ``heading`` in the README."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    after = text[text.index(heading):]
    return re.findall(r"^```\w*\n(.*?)^```", after, re.S | re.M)[:count]


def jdbc_functions(port: int, pattern: str, schema: str = "%") -> list[tuple[str, str, str]]:
    """(schema, name, remarks) of what the Thrift GetFunctions call (JDBC
    DatabaseMetaData.getFunctions) lists for the name and schema patterns."""
    from pyhive import hive
    from TCLIService import ttypes

    connection = hive.connect(host="127.0.0.1", port=port)
    try:
        response = connection.client.GetFunctions(ttypes.TGetFunctionsReq(
            sessionHandle=connection._sessionHandle, schemaName=schema, functionName=pattern))
        assert response.status.statusCode == ttypes.TStatusCode.SUCCESS_STATUS, response.status
        fetched = connection.client.FetchResults(ttypes.TFetchResultsReq(
            operationHandle=response.operationHandle,
            orientation=ttypes.TFetchOrientation.FETCH_NEXT, maxRows=10_000))
        columns = fetched.results.columns  # FUNCTION_CAT, _SCHEM, _NAME, REMARKS, ...
        return list(zip(*(columns[i].stringVal.values for i in (1, 2, 3))))
    finally:
        connection.close()


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


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    import sql_dl

    spark = sql_dl.session(
        master="local[2]",
        conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2"},
        home=tmp_path_factory.mktemp("sql_dl_home"))
    yield spark
    spark.stop()


@pytest.fixture(scope="session", autouse=True)
def gpu_run_started(request, tmp_path_factory):
    """tests/test_devices.py's GPU-scheduled script, started with the suite's first test when
    a test that reads it is selected. Yields the process and its directory (else None)."""
    if not any("gpu_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    from test_devices import start_gpu_run

    directory = tmp_path_factory.mktemp("gpus")
    process = start_gpu_run(directory, *(request.getfixturevalue(name) for name in
                                         ("photos_dir", "cnn_file", "labels_file")))
    yield process, directory
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="session", autouse=True)
def keep_warm_run(request, tmp_path_factory):
    """The keep-warm test's script, started with the suite's first test when that test is
    selected: 72 s of its 100 s are its session staying idle, which the other tests use.
    Yields the process and its directory (None when the test is not selected)."""
    if not any(item.name.startswith("test_keep_warm_") for item in request.session.items):
        yield None
        return
    from test_session import start_keep_warm

    directory = tmp_path_factory.mktemp("keep_warm")
    process = start_keep_warm(directory, request.getfixturevalue("cnn_file"),
                              request.getfixturevalue("photos_dir"))
    yield process, directory
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("photos")
    photo_files(directory)
    return directory


@pytest.fixture(scope="session")
def photos(photos_dir) -> list[Path]:
    return sorted(p for p in photos_dir.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def cnn_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny_cnn.keras"
    tiny_cnn().save(path)
    return path


@pytest.fixture(scope="session")
def labels_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "labels.txt"
    path.write_text("\n".join(CLASS_NAMES) + "\n")
    return path


# Spark's file sources never list empty files, so empty.jpg is in no view.
UNDECODABLE = ("random.jpg", "truncated.jpg", "text.png", "bomb.png")


@pytest.fixture(scope="session")
def hostile_dir(tmp_path_factory, photos) -> Path:
    """Undecodable files, and valid ones in every format and mode Pillow reads."""
    import skimage.data
    from PIL import Image

    directory = tmp_path_factory.mktemp("hostile")
    jpeg = next(f for f in photos if f.suffix == ".jpg").read_bytes()
    (directory / "empty.jpg").write_bytes(b"")
    (directory / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    (directory / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (directory / "text.png").write_text("this is not a PNG")
    (directory / "bomb.png").write_bytes(png_bomb())
    chelsea = Image.fromarray(skimage.data.chelsea())
    chelsea.convert("CMYK").save(directory / "cmyk.jpg")
    Image.fromarray(skimage.data.camera().astype(np.uint16) * 257).save(directory / "grey16.png")
    chelsea.convert("P").save(directory / "palette.gif")
    frames = [chelsea.convert("P"), chelsea.rotate(90).convert("P")]
    frames[0].save(directory / "animated.gif", save_all=True, append_images=frames[1:])
    for suffix in ("bmp", "webp", "tiff"):
        chelsea.save(directory / f"photo.{suffix}")
    Image.new("RGB", (1, 1), (200, 30, 90)).save(directory / "one.png")
    alpha = chelsea.convert("RGBA")
    alpha.putalpha(Image.linear_gradient("L").resize(chelsea.size).point(lambda a: 64 + a // 2))
    alpha.save(directory / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° to view; load_img does not apply it
    chelsea.save(directory / "rotated_exif.jpg", exif=exif)
    assert Image.open(directory / "grey16.png").mode == "I;16"
    assert Image.open(directory / "cmyk.jpg").mode == "CMYK"
    return directory


@pytest.fixture(scope="session")
def valid_files(hostile_dir) -> list[Path]:
    return sorted(f for f in hostile_dir.iterdir() if f.name not in (*UNDECODABLE, "empty.jpg"))
