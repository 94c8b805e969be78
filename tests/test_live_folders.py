"""Image views follow their folders: each query sees the files there when it starts (or a
listing younger than max_staleness), a file deleted after the listing has a NULL image and
is counted, and the task count follows the folder's size."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.reference import keras_outputs, local, TOLERANCE

import sql_dl
from sql_dl.cli.shell import SqlShell
from sql_dl.ml import read_images


def copy_photos(photos: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    return folder


def names(rows) -> list[str]:
    return sorted(local(r.path).name for r in rows)


def manifest(folder: Path, cnn_file: Path | None = None, **view) -> dict:
    data = {"images": {"live": {"path": str(folder), **view}}}
    if cnn_file is not None:
        data["preprocessors"] = {"p": {"size": [32, 32], "mode": "tf"}}
        data["models"] = {"cnn": {"path": str(cnn_file), "preprocessor": "p"}}
    return data


def test_a_view_sees_files_added_and_deleted_after_bootstrap(spark, photos, cnn_file, tmp_path):
    folder = copy_photos(photos[:6], tmp_path / "live")
    sql_dl.bootstrap(spark, manifest(folder, cnn_file))
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == 6
    for gone in sorted(folder.iterdir())[:3]:
        gone.unlink()
    copy_photos(photos[6:], folder)
    shutil.copy(photos[0], folder / "copy.png")
    expected = sorted(folder.iterdir())
    rows = spark.sql("SELECT path, cnn(image) AS out FROM live ORDER BY path").collect()
    assert names(rows) == [f.name for f in expected]
    np.testing.assert_allclose(np.array([r.out for r in rows]), keras_outputs(cnn_file, expected, "tf"),
                               **TOLERANCE)
    frame = spark.table("live")  # a DataFrame of the view lists the folder at each action
    (folder / "copy.png").unlink()
    assert frame.count() == len(expected) - 1


def test_a_file_deleted_between_listing_and_reading_is_null_and_counted(
        spark, photos, cnn_file, tmp_path):
    """The query sees the folder as it was when it started; the file's bytes are gone when
    its task reads them. (The driver's log line naming the file is checked in test_server,
    where the log is a file.)"""
    folder = copy_photos(photos, tmp_path / "live")
    sql_dl.bootstrap(spark, manifest(folder, cnn_file, max_staleness="1h"))
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == len(photos)  # listed now
    gone = sorted(folder.iterdir())[2]
    gone.unlink()
    before = sql_dl.skipped_file_count(spark)
    rows = spark.sql("SELECT path, cnn(image) AS out FROM live").collect()
    assert names(rows) == sorted(p.name for p in photos)
    assert [local(r.path).name for r in rows if r.out is None] == [gone.name]
    assert sql_dl.skipped_file_count(spark) - before == 1


def test_read_images_keeps_its_snapshot_and_skips_deleted_files(spark, photos, tmp_path):
    folder = copy_photos(photos, tmp_path / "snapshot")
    frame = read_images(spark, str(folder))
    sorted(folder.iterdir())[0].unlink()
    shutil.copy(photos[0], folder / "added_later.png")
    listed = sorted(p.name for p in photos)[1:]
    assert names(frame.select("path", "image").collect()) == listed


def test_max_staleness_reuses_a_listing_for_that_long(spark, photos, tmp_path):
    folder = copy_photos(photos[:4], tmp_path / "stale")
    sql_dl.bootstrap(spark, manifest(folder, max_staleness="1h"))
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == 4
    copy_photos(photos[4:5], folder)
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == 4  # listed an hour ago
    sql_dl.bootstrap(spark, manifest(folder, max_staleness="1s"))
    time.sleep(1.2)
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == 5
    copy_photos(photos[5:6], folder)
    time.sleep(1.2)
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == 6


def test_the_task_count_follows_the_folder(spark, photos, tmp_path):
    """With tasks of 2 images: one task's worth is read where the catalog's rows are (no
    shuffle), more in tasks of at most 2, a multiple of the 2 cores."""
    folder = copy_photos(photos[:2], tmp_path / "growing")
    sql_dl.bootstrap(spark, manifest(folder, images_per_task=2))
    assert spark.table("live").rdd.getNumPartitions() == 1
    copy_photos(photos[2:], folder)  # 9 files: 6 tasks of at most 2
    assert spark.table("live").rdd.getNumPartitions() == 6
    assert spark.sql("SELECT count(*) AS n FROM live").first().n == len(photos) == 9


def test_the_shell_reports_files_deleted_after_listing(spark, photos, tmp_path):
    folder = copy_photos(photos[:5], tmp_path / "shell")
    sql_dl.bootstrap(spark, manifest(folder, max_staleness="1h"))
    out, err = io.StringIO(), io.StringIO()
    shell = SqlShell(spark, out=out, err=err, silent=True)
    assert shell.run("SELECT count(image) FROM live")
    sorted(folder.iterdir())[0].unlink()
    assert shell.run("SELECT count(image) FROM live")  # the listing of an hour: 1 image NULL
    assert out.getvalue().split() == ["5", "4"]
    assert ("Warning: 1 image file(s) were deleted after their folder was listed; their "
            "images are NULL") in err.getvalue()


@pytest.mark.parametrize("value, message", [
    ("soon", "must be a duration such as 0, 30s, 10m, 2h or 1d"),
    (-1, "must be a duration"),
    (True, "must be a duration"),
])
def test_max_staleness_must_be_a_duration(tmp_path, value, message):
    with pytest.raises(sql_dl.ManifestError, match=f"images.live.max_staleness: {message}"):
        sql_dl.load_manifest(manifest(tmp_path, max_staleness=value))


@pytest.mark.parametrize("value, seconds", [(0, 0), ("90", 90), ("30s", 30), ("10m", 600),
                                            ("1.5h", 5400), ("1d", 86400), ("250ms", 0.25)])
def test_max_staleness_units(tmp_path, value, seconds):
    spec = sql_dl.load_manifest(manifest(tmp_path, max_staleness=value)).images["live"]
    assert spec.max_staleness == seconds
