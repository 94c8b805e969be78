"""sql_dl_thumbnail and sql_dl_image_info on every kind of file of the hostile matrix, by
bytes, path and image struct, against Keras's load_img and the files' known headers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers.data import decoded, UNDECODABLE
from PIL import Image
from helpers.reference import local

import sql_dl
from sql_dl.executor.images import thumbnail_url

# (format, mode, width, height, frames) of each file, as written by the hostile_dir fixture;
# truncated.jpg keeps its header (astronaut, 512x512).
HEADERS = {
    "alpha.png": ("PNG", "RGBA", 451, 300, 1),
    "animated.gif": ("GIF", "P", 451, 300, 2),
    "cmyk.jpg": ("JPEG", "CMYK", 451, 300, 1),
    "grey16.png": ("PNG", "I;16", 512, 512, 1),
    "one.png": ("PNG", "RGB", 1, 1, 1),
    "palette.gif": ("GIF", "P", 451, 300, 1),
    "photo.bmp": ("BMP", "RGB", 451, 300, 1),
    "photo.tiff": ("TIFF", "RGB", 451, 300, 1),
    "photo.webp": ("WEBP", "RGB", 451, 300, 1),
    "rotated_exif.jpg": ("JPEG", "RGB", 451, 300, 1),
    "truncated.jpg": ("JPEG", "RGB", 512, 512, 1),
}


@pytest.fixture(scope="module")
def images(spark, hostile_dir):
    sql_dl.bootstrap(spark, {"images": {"hostile": {"path": str(hostile_dir)}}})
    return spark


def load_img_reference(path, size: tuple[int, int]) -> np.ndarray:
    """What Keras's load_img gives for the file, resized to the thumbnail's size."""
    import keras

    return np.asarray(keras.utils.load_img(path).resize(size, Image.Resampling.LANCZOS),
                      dtype=np.float32)


def test_thumbnails_of_the_hostile_matrix(images, hostile_dir, valid_files):
    rows = {local(r.path).name: r for r in images.sql(
        "SELECT path, sql_dl_thumbnail(image) AS t, sql_dl_thumbnail(image, 40) AS t40, "
        "sql_dl_thumbnail(path, 40) AS by_path FROM hostile").collect()}
    assert set(rows) == {*UNDECODABLE, *(f.name for f in valid_files)}
    for name in UNDECODABLE:
        assert rows[name].t is None and rows[name].t40 is None and rows[name].by_path is None
    for file in valid_files:
        row, original = rows[file.name], Image.open(file)
        assert row.by_path == row.t40
        for url, size in ((row.t, 128), (row.t40, 40)):
            thumbnail = decoded(url)
            longest = min(size, max(original.size))  # never enlarged
            assert max(thumbnail.size) == longest, file.name
            assert abs(thumbnail.width / thumbnail.height - original.width / original.height
                       ) <= 2 / min(thumbnail.size), file.name  # aspect kept, to a pixel
            transparent = file.name == "alpha.png"
            assert thumbnail.format == ("PNG" if transparent else "JPEG"), file.name
            assert thumbnail.mode == ("RGBA" if transparent else "RGB")
            expected = load_img_reference(file, thumbnail.size)
            pixels = np.asarray(thumbnail.convert("RGB"), dtype=np.float32)
            assert np.abs(pixels - expected).mean() < 6, file.name  # JPEG-compressed
    alpha = np.asarray(decoded(rows["alpha.png"].t))[..., 3]
    assert 60 <= alpha.min() and alpha.max() >= 180  # the gradient survives


def test_thumbnails_follow_load_img_not_exif(images, hostile_dir):
    """First frame only; EXIF orientation ignored, as load_img ignores it."""
    rows = {local(r.path).name: decoded(r.t) for r in images.sql(
        "SELECT path, sql_dl_thumbnail(image) AS t FROM hostile "
        "WHERE path LIKE '%animated.gif' OR path LIKE '%rotated_exif.jpg'").collect()}
    assert rows["rotated_exif.jpg"].size == (128, 85)  # landscape, as stored
    first_frame = load_img_reference(hostile_dir / "palette.gif", rows["animated.gif"].size)
    animated = np.asarray(rows["animated.gif"], dtype=np.float32)
    assert np.abs(animated - first_frame).mean() < 6


def test_thumbnails_of_image_structs_and_sizes(images, spark, photos_dir, photos):
    spark.read.format("image").option("recursiveFileLookup", "true").load(
        str(photos_dir)).createOrReplaceTempView("structs")  # Spark's own image structs
    rows = spark.sql("SELECT origin, sql_dl_thumbnail(image, 64) AS t, "
                     "sql_dl_image_info(image) AS info FROM (SELECT image.origin, image "
                     "FROM structs)").collect()
    assert len(rows) == len(photos)
    for row in rows:
        file = local(row.origin)
        with Image.open(file) as original:
            size = original.size
        thumbnail = decoded(row.t)
        assert max(thumbnail.size) == min(64, max(size))
        expected = load_img_reference(file, thumbnail.size)
        assert np.abs(np.asarray(thumbnail.convert("RGB"), np.float32) - expected).mean() < 6
        assert (row.info.format, row.info.width, row.info.height) == (None, *size)
        assert row.info.mode in ("L", "RGB", "RGBA") and row.info.frames == 1
    edge = spark.sql("SELECT sql_dl_thumbnail(X'') AS empty, sql_dl_thumbnail(NULL) AS null, "
                     f"sql_dl_thumbnail('{photos[0]}', CAST(NULL AS INT)) AS null_size, "
                     f"sql_dl_thumbnail('{photos[0]}', 1) AS one, "
                     f"sql_dl_thumbnail('{photos[0]}', 1024) AS large").first()
    assert (edge.empty, edge.null, edge.null_size) == (None, None, None)
    assert max(decoded(edge.one).size) == 1
    assert decoded(edge.large).size == Image.open(photos[0]).size  # smaller than 1024


@pytest.mark.parametrize("size, received", [("0", "INT 0"), ("1025", "INT 1025"),
                                            ("-3", "INT -3")])
def test_thumbnail_sizes_out_of_range_fail_at_analysis(images, photos, size, received):
    from pyspark.errors import AnalysisException

    with pytest.raises(AnalysisException, match=re.escape(
            "sql_dl_thumbnail(image, size): size must be an INT from 1 to 1024. "
            f"Received: size {received}")):
        images.sql(f"SELECT sql_dl_thumbnail('{photos[0]}', {size})")


@pytest.mark.parametrize("size", [0, 1025])
def test_thumbnail_sizes_out_of_range_from_a_column_fail_in_the_task(images, photos, size):
    from pyspark.errors import PythonException

    with pytest.raises(PythonException, match=re.escape(
            "FunctionArgumentError: sql_dl_thumbnail(image, size): size must be an integer "
            f"from 1 to 1024 (pixels on the longest side). Received: size={size}")):
        images.sql(f"SELECT sql_dl_thumbnail('{photos[0]}', CAST(id AS INT)) "
                   f"FROM range({size}, {size + 1})").collect()


def test_image_info_reads_headers_of_the_hostile_matrix(images, hostile_dir):
    rows = {local(r.path).name: r.info for r in images.sql(
        "SELECT path, sql_dl_image_info(image) AS info FROM hostile").collect()}
    for name in ("random.jpg", "text.png", "bomb.png"):  # bomb: over Pillow's hard limit
        assert rows.pop(name) is None, name
    assert {name: tuple(info) for name, info in rows.items()} == HEADERS
    row = images.sql(f"SELECT sql_dl_image_info('{hostile_dir / 'cmyk.jpg'}') AS by_path, "
                     "sql_dl_image_info(X'') AS empty, sql_dl_image_info(NULL) AS null").first()
    assert tuple(row.by_path) == HEADERS["cmyk.jpg"]
    assert (row.empty, row.null) == (None, None)


def test_image_info_does_not_decode_pixels(images, hostile_dir):
    """A header over max_pixels and a truncated file still give their header; decoding
    either would fail."""
    row = images.sql("SELECT sql_dl_image_info(image) AS info, sql_dl_image_error(image) AS "
                     "error FROM hostile WHERE path LIKE '%truncated.jpg'").first()
    assert tuple(row.info) == HEADERS["truncated.jpg"] and row.error.startswith("OSError")
    assert thumbnail_url((hostile_dir / "photo.bmp").read_bytes(), max_pixels=100) is None
    assert thumbnail_url(str(hostile_dir / "one.png"), max_pixels=100) is not None


def test_the_functions_are_registered_with_every_manifest(images):
    """Listed in sql_dl_models and described by DESCRIBE FUNCTION, even with no model."""
    rows = {r.function: r for r in images.sql("SELECT * FROM sql_dl_models").collect()}
    assert {name: rows[name].kind for name in ("sql_dl_thumbnail", "sql_dl_image_info")} == {
        "sql_dl_thumbnail": "thumbnail", "sql_dl_image_info": "image_info"}
    described = "\n".join(r[0] for r in images.sql(
        "DESCRIBE FUNCTION EXTENDED sql_dl_thumbnail").collect())
    assert "Usage: sql_dl_thumbnail(image[, size]) - The image shrunk" in described
    assert "size - INT from 1 to 1024, pixels on the longest side (default 128)" in described
    described = "\n".join(r[0] for r in images.sql(
        "DESCRIBE FUNCTION sql_dl_image_info").collect())
    assert ("STRUCT<format: STRING, mode: STRING, width: INT, height: INT, frames: INT>"
            in described)
    schema = images.sql("SELECT sql_dl_image_info(X'') AS info").schema["info"].dataType
    assert schema.simpleString() == ("struct<format:string,mode:string,width:int,height:int,"
                                     "frames:int>")
