"""Shared fixtures: one SparkSession, real photos in several modes and formats, tiny models."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from helpers.data import CLASS_NAMES, photo_files, png_bomb, tiny_cnn, UNDECODABLE

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

@pytest.fixture(scope="session")
def live_dir(tmp_path_factory, photos) -> Path:
    """A folder of the shared server's views ``recent`` and ``recent_hourly`` that tests
    change (named after ``photos``: function examples name the first view)."""
    folder = tmp_path_factory.mktemp("live")
    for photo in photos[:4]:
        shutil.copy(photo, folder / photo.name)
    return folder


# The shared server's access section: ops administers; preprocessor p32 and view secret
# (the photos again) are bob's; everything else is open to every analyst.
SERVER_ACCESS = {"admins": ["ops"], "grants": {"p32": ["bob"], "secret": ["bob"]}}
# Its indexes: one every analyst may search, one over bob's view secret.
SERVER_INDEXES = {"photos_like": {"view": "photos", "function": "cnn_features"},
                  "secret_like": {"view": "secret", "function": "cnn_features", "metric": "l2"}}


@pytest.fixture(scope="session")
def manifest_file(tmp_path_factory, photos_dir, cnn_file, labels_file, live_dir):
    """The shared server's manifest."""
    from helpers.processes import write_manifest

    return write_manifest(tmp_path_factory.mktemp("serve") / "models.yaml", photos_dir, cnn_file,
                          labels_file, access=SERVER_ACCESS, indexes=SERVER_INDEXES,
                          recent={"path": str(live_dir)},
                          recent_hourly={"path": str(live_dir), "max_staleness": "1h"},
                          secret={"path": str(photos_dir)})


@pytest.fixture(scope="session")
def server(manifest_file, tmp_path_factory):
    """``sql-dl serve`` as users start it, shared by tests/test_server.py and
    tests/test_access.py (started once: a server takes half a minute to start)."""
    from helpers.processes import Server

    server = Server(manifest_file, tmp_path_factory.mktemp("serve_home") / "home")
    server.url = server.wait_ready()
    yield server
    if server.process.poll() is None:
        server.stop()


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
    from helpers.processes import start_gpu_run

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
    from helpers.processes import start_keep_warm

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
