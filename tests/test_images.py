"""Decoding and preprocessing against Keras's own load_img and preprocess_input, without Spark."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from helpers.data import png_bomb
from helpers.reference import keras_tensor

from sql_dl import ImageDecodeError
from sql_dl.executor.images import preprocess_batch
from sql_dl.manifest import PreprocessorSpec
from sql_dl.rules import INTERPOLATIONS, PREPROCESS_MODES


@pytest.mark.parametrize("mode", PREPROCESS_MODES)
def test_modes_match_keras(photos, mode):
    spec = PreprocessorSpec("p", (48, 40), mode)
    tensors, ok = preprocess_batch([f.read_bytes() for f in photos], spec, "fail")
    assert ok.all()
    expected = np.concatenate([keras_tensor(f, (48, 40), mode=mode) for f in photos])
    np.testing.assert_allclose(tensors, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_interpolations_match_keras(photos, interpolation):
    spec = PreprocessorSpec("p", (17, 29), "none", interpolation)
    tensors, _ = preprocess_batch([str(f) for f in photos], spec, "fail")
    expected = np.concatenate([keras_tensor(f, (17, 29), interpolation) for f in photos])
    np.testing.assert_array_equal(tensors, expected)


def test_custom_function(photos):
    spec = PreprocessorSpec("p", (8, 8), function="numpy:flipud")
    tensors, _ = preprocess_batch([str(photos[0])], spec, "fail")
    np.testing.assert_array_equal(tensors[0], np.flipud(keras_tensor(photos[0], (8, 8))[0]))


@pytest.fixture
def bad_images(photos):
    jpeg = next(f for f in photos if f.suffix == ".jpg").read_bytes()
    return {"empty": b"", "text": b"hello, not an image", "truncated": jpeg[: len(jpeg) // 3],
            "bomb": png_bomb()}


def test_undecodable_images_are_skipped_under_null(bad_images, photos):
    from PIL import Image

    with pytest.raises(Image.DecompressionBombError):  # a valid header, only too large
        Image.open(io.BytesIO(bad_images["bomb"]))
    values = [photos[0].read_bytes(), *bad_images.values(), None]
    tensors, ok = preprocess_batch(values, PreprocessorSpec("p", (8, 8), "none"), "null")
    assert ok.tolist() == [True] + [False] * len(bad_images) + [False]
    np.testing.assert_array_equal(tensors, keras_tensor(photos[0], (8, 8)))


@pytest.mark.parametrize("name", ["empty", "text", "truncated", "bomb"])
def test_undecodable_image_under_fail_names_its_content_hash(bad_images, name):
    data = bad_images[name]
    digest = hashlib.sha256(data).hexdigest()[:16]
    message = (rf"^cannot decode the image: \w+: .*\. Fix or remove the file, or set on_error: "
               rf"null to get NULL for it\. Received: image of {len(data)} bytes with SHA-256 "
               rf"{digest}\.\.\., found by sha2\(image, 256\) LIKE '{digest}%'$")
    with pytest.raises(ImageDecodeError, match=message):
        preprocess_batch([data], PreprocessorSpec("p", (8, 8), "none"), "fail")


def test_undecodable_path_under_fail_names_the_path(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a png")
    with pytest.raises(ImageDecodeError, match=r"^cannot decode the image: UnidentifiedImageError: "
                                               r"cannot identify image file\. .*set on_error: null.*"
                                               rf"Received: path='{path}'$"):
        preprocess_batch([str(path)], PreprocessorSpec("p", (8, 8), "none"), "fail")


def test_max_pixels_refuses_an_image_from_its_header(photos):
    from PIL import Image

    width, height = Image.open(photos[0]).size
    spec = PreprocessorSpec("p", (8, 8), "none", max_pixels=width * height - 1)
    with pytest.raises(ImageDecodeError, match=rf"DecompressionBombError: {width}x{height} = "
                                               rf"{width * height} pixels is over the limit of "
                                               rf"{width * height - 1} \(the preprocessor's max_pixels\)"):
        preprocess_batch([str(photos[0])], spec, "fail")
    spec = PreprocessorSpec("p", (8, 8), "none", max_pixels=width * height)
    np.testing.assert_array_equal(preprocess_batch([str(photos[0])], spec, "fail")[0],
                                  keras_tensor(photos[0], (8, 8)))


@pytest.fixture(scope="module")
def camera_jpegs(tmp_path_factory, photos) -> list:
    """12-megapixel JPEGs (4000x3000, what phones make), upscaled from the shipped photos."""
    from PIL import Image

    directory = tmp_path_factory.mktemp("camera")
    files = []
    for photo in (f for f in photos if f.name in ("astronaut.jpg", "coffee.png", "china.jpg")):
        image = Image.open(photo).convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS)
        image.save(directory / f"{photo.stem}.jpg", quality=90)
        files.append(directory / f"{photo.stem}.jpg")
    return files


@pytest.mark.parametrize("size", [(224, 224), (299, 299), (32, 48)])
def test_draft_decoding_of_camera_sized_jpegs_stays_within_one_level_of_load_img(
        camera_jpegs, size):
    """decode: draft decodes at a quarter or an eighth of the scale here (4000x3000 to
    1000x750 for 224 and 299, 500x375 for 32x48: every side at least twice the target),
    then resizes as load_img does: on real photos the mean difference stays under 1 of 255
    levels (0.07-0.27 measured), where exact decoding is load_img's to the bit."""
    draft = PreprocessorSpec("p", size, "none", decode="draft")
    exact = PreprocessorSpec("p", size, "none")
    tensors, ok = preprocess_batch([f.read_bytes() for f in camera_jpegs], draft, "fail")
    assert ok.all()
    expected = np.concatenate([keras_tensor(f, size) for f in camera_jpegs])
    differences = np.abs(tensors - expected).mean(axis=(1, 2, 3))
    assert (differences <= 1.0).all() and (differences > 0).all(), differences  # draft, close
    np.testing.assert_array_equal(preprocess_batch([str(f) for f in camera_jpegs], exact,
                                                   "fail")[0], expected)


def test_draft_decoding_leaves_other_formats_and_the_pixel_limit_alone(photos, camera_jpegs):
    pngs = [f for f in photos if f.suffix == ".png"]
    draft = PreprocessorSpec("p", (40, 40), "none", decode="draft")
    np.testing.assert_array_equal(preprocess_batch([str(f) for f in pngs], draft, "fail")[0],
                                  np.concatenate([keras_tensor(f, (40, 40)) for f in pngs]))
    small = PreprocessorSpec("p", (40, 40), "none", decode="draft", max_pixels=4000 * 3000 - 1)
    with pytest.raises(ImageDecodeError, match=r"DecompressionBombError: 4000x3000 = 12000000 "
                                               r"pixels is over the limit of 11999999"):
        preprocess_batch([str(camera_jpegs[0])], small, "fail")


def test_draft_decoding_in_sql(spark, camera_jpegs):
    """The manifest's decode: draft reaches the executors: SQL gives the draft tensors, within
    one level of load_img, and a model's DESCRIBE FUNCTION says so."""
    import sql_dl

    sql_dl.bootstrap(spark, {
        "preprocessors": {"p_draft": {"size": [64, 64], "mode": "none", "decode": "draft"}},
        "images": {"camera": {"path": str(camera_jpegs[0].parent)}}})
    rows = spark.sql("SELECT path, p_draft(image) AS x FROM camera ORDER BY path").collect()
    assert [r.path.rsplit("/", 1)[1] for r in rows] == sorted(f.name for f in camera_jpegs)
    draft = PreprocessorSpec("p", (64, 64), "none", decode="draft")
    for row, file in zip(rows, sorted(camera_jpegs)):
        expected = preprocess_batch([file.read_bytes()], draft, "fail")[0].reshape(-1)
        np.testing.assert_array_equal(np.asarray(row.x, np.float32), expected)
        assert 0 < np.abs(expected - keras_tensor(file, (64, 64)).reshape(-1)).mean() <= 1.0
    described = "\n".join(r[0] for r in spark.sql("DESCRIBE FUNCTION p_draft").collect())
    assert "JPEGs decoded at a reduced scale (draft)" in described
