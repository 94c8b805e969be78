"""Hostile files, a Python worker killed mid-query, model files changed after bootstrap,
untrusted models and long runs."""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.data import png_bomb, tiny_cnn, UNDECODABLE
from helpers.reference import keras_tensor, local, TOLERANCE

import sql_dl
from sql_dl import ModelLoadError
from sql_dl.ml import read_images
from sql_dl.cli.shell import SqlShell

@pytest.fixture(scope="module")
def hostile(spark, hostile_dir, cnn_file):
    sql_dl.bootstrap(spark, {
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"},
                          "small": {"size": [32, 32], "mode": "caffe", "max_pixels": 100}},
        "models": {"m": {"path": str(cnn_file), "preprocessor": "p32"},
                   "m_small": {"path": str(cnn_file), "preprocessor": "small"},
                   "m_fail": {"path": str(cnn_file), "preprocessor": "p32", "on_error": "fail"}},
        "images": {"hostile": {"path": str(hostile_dir)},
                   "bomb": {"path": str(hostile_dir), "glob": "bomb.png"}}})
    return spark


def test_hostile_files_in_sql(hostile, hostile_dir, valid_files, cnn_file):
    import keras

    before = sql_dl.bad_image_count(hostile)
    rows = {local(r.path).name: r for r in hostile.sql(
        "SELECT path, m(image) AS out, sql_dl_image_error(image) AS error FROM hostile").collect()}
    assert sql_dl.bad_image_count(hostile) - before == len(UNDECODABLE)
    for _ in range(2):  # ORDER BY samples the UDF's output first: still one count per image
        before = sql_dl.bad_image_count(hostile)
        hostile.sql("SELECT path, m(image) FROM hostile ORDER BY path").collect()
        assert sql_dl.bad_image_count(hostile) - before == len(UNDECODABLE)
    assert set(rows) == {*UNDECODABLE, *(f.name for f in valid_files)}
    for name in UNDECODABLE:
        assert rows[name].out is None and rows[name].error
    assert rows["bomb.png"].error.startswith("DecompressionBombError: Image size (10000000000 "
                                             "pixels) exceeds limit")  # from the header alone
    assert rows["truncated.jpg"].error.startswith("OSError: image file is truncated")
    empty = hostile_dir / "empty.jpg"
    row = hostile.sql(f"SELECT m('{empty}') AS by_path, m(X'') AS by_bytes, "
                      f"sql_dl_image_error('{empty}') AS error").first()
    assert (row.by_path, row.by_bytes) == (None, None)
    assert row.error.startswith("UnidentifiedImageError: cannot identify image file")
    model = keras.saving.load_model(cnn_file)
    expected = model.predict(np.concatenate([keras_tensor(f, (32, 32), mode="caffe")
                                             for f in valid_files]), verbose=0)
    for file, want in zip(valid_files, expected):
        assert rows[file.name].error is None
        np.testing.assert_allclose(rows[file.name].out, want, **TOLERANCE)


def test_max_pixels_and_on_error_fail(hostile, hostile_dir):
    from pyspark.errors import PythonException

    rows = hostile.sql("SELECT path, m_small(image) AS out FROM hostile").collect()
    assert sorted(local(r.path).name for r in rows if r.out is not None) == ["one.png"]
    digest = hashlib.sha256(png_bomb()).hexdigest()[:16]
    with pytest.raises(PythonException, match=r"ImageDecodeError: cannot decode the image: "
                                              rf"DecompressionBombError.*Received: image of \d+ bytes "
                                              rf"with SHA-256 {digest}"):
        hostile.sql("SELECT m_fail(image) FROM bomb").collect()


def test_the_shell_reports_each_statement_s_undecodable_images(hostile):
    err = io.StringIO()
    shell = SqlShell(hostile, out=io.StringIO(), err=err)
    assert shell.run("SELECT count(m(image)) FROM hostile")
    assert (f"Warning: {len(UNDECODABLE)} image(s) could not be decoded and gave NULL; "
            "sql_dl_image_error(image) tells why") in err.getvalue()
    err.truncate(0)
    assert shell.run("SELECT count(m(image)) FROM hostile WHERE path LIKE '%one.png'")
    assert "Warning" not in err.getvalue()


def test_hostile_files_in_read_images(spark, hostile_dir, valid_files):
    frame = read_images(spark, str(hostile_dir), drop_invalid=True)
    assert sorted(local(r.path) for r in frame.collect()) == valid_files
    small = read_images(spark, str(hostile_dir), drop_invalid=True, max_pixels=100)
    assert [local(r.path).name for r in small.collect()] == ["one.png"]
    assert read_images(spark, str(hostile_dir)).count() == len(valid_files) + len(UNDECODABLE)
    assert read_images(spark, str(hostile_dir), drop_invalid=True, max_pixels=100).count() == 1
    with pytest.raises(ValueError, match="max_pixels must be a positive integer. "
                                         "Received: max_pixels=0"):
        read_images(spark, str(hostile_dir), max_pixels=0)


def test_a_folder_of_thousands_of_small_files(spark, tmp_path, cnn_file):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(2000):
        folder = tmp_path / "many" / f"d{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    sql_dl.bootstrap(spark, {"models": {"m": {"path": str(cnn_file)}},
                             "images": {"many": {"path": str(tmp_path / "many")}}})
    row = spark.sql("SELECT count(*) AS n, count(m(image)) AS ok, count(DISTINCT label) AS labels "
                    "FROM many").first()
    assert (row.n, row.ok, row.labels) == (2000, 2000, 4)


def test_a_killed_python_worker_is_retried_and_every_row_comes_once(spark, photos_dir, photos,
                                                                    cnn_file, tmp_path):
    """A preprocessor that kills its own Python worker the first time it runs."""
    import keras

    marker = tmp_path / "killed"
    module = tmp_path / "sql_dl_test_faults.py"
    module.write_text(
        "import os, signal, pathlib\n\n"
        "def die_once(array):\n"
        f"    marker = pathlib.Path({str(marker)!r})\n"
        "    if not marker.exists():\n"
        "        marker.touch()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return array\n")
    spark.sparkContext.addPyFile(str(module))
    sql_dl.bootstrap(spark, {
        "preprocessors": {"fragile": {"size": [32, 32], "function": "sql_dl_test_faults:die_once"}},
        "models": {"m": {"path": str(cnn_file), "preprocessor": "fragile"}},
        "images": {"photos": {"path": str(photos_dir)}}})
    rows = spark.sql("SELECT path, m(image) AS out FROM photos").collect()
    assert marker.exists()  # a worker died
    assert sorted(local(r.path) for r in rows) == photos  # every row, once
    expected = keras.saving.load_model(cnn_file).predict(
        np.concatenate([keras_tensor(f, (32, 32)) for f in photos]), verbose=0)
    outputs = {local(r.path): r.out for r in rows}
    np.testing.assert_allclose([outputs[f] for f in photos], expected, **TOLERANCE)


def shipped_copy(spark, model_file: Path) -> Path:
    """Where executors of this local session read a model bootstrap shipped."""
    from pyspark import SparkFiles

    from sql_dl.staging import staged_name

    return Path(SparkFiles.getRootDirectory()) / staged_name(str(model_file))


def test_model_file_removed_or_corrupted_after_bootstrap(spark, photos_dir, photos, tmp_path):
    from pyspark.errors import PythonException

    files = {}
    for seed, name in ((41, "removed"), (42, "corrupted"), (43, "vanished")):
        files[name] = tmp_path / f"{name}.keras"
        tiny_cnn(seed=seed).save(files[name])
    sql_dl.bootstrap(spark, {"models": {name: {"path": str(f)} for name, f in files.items()},
                             "images": {"photos": {"path": str(photos_dir)}}})
    files["removed"].unlink()  # the user's file: bootstrap's copy still answers
    assert spark.sql("SELECT count(removed(image)) AS n FROM photos").first().n == len(photos)

    corrupted = shipped_copy(spark, files["corrupted"])
    assert corrupted.exists()
    corrupted.write_bytes(corrupted.read_bytes()[:1000])
    with pytest.raises(PythonException, match=rf"ModelLoadError: model 'corrupted': the copy of "
                                              rf"'{files['corrupted']}' shipped to this executor "
                                              r"\(.*\) is not the file bootstrap checked"):
        spark.sql("SELECT corrupted(image) FROM photos").collect()

    shipped_copy(spark, files["vanished"]).unlink()
    with pytest.raises(PythonException, match=r"ModelLoadError: vanished-[0-9a-f]{16}\.keras was not "
                                              r"shipped to this executor; run bootstrap.*"
                                              rf"Received: file='{files['vanished']}'"):
        spark.sql("SELECT vanished(image) FROM photos").collect()


@pytest.fixture(scope="module")
def lambda_model_file(tmp_path_factory) -> Path:
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 0.5 + 1.0, name="code")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_models_with_code_need_trust_code(spark, photos_dir, photos, lambda_model_file):
    import keras

    entry = {"path": str(lambda_model_file), "preprocessor": "p"}
    manifest = {"preprocessors": {"p": {"size": [32, 32], "mode": "tf"}},
                "models": {"coded": entry}, "images": {"photos": {"path": str(photos_dir)}}}
    with pytest.raises(ModelLoadError, match=r"models\.coded\.path: cannot load a Keras model: the model "
                                             r"carries Python code \(a Lambda layer\).*unless its "
                                             r"manifest entry says trust_code: true"):
        sql_dl.bootstrap(spark, manifest)
    entry["trust_code"] = True
    sql_dl.bootstrap(spark, manifest)
    rows = spark.sql("SELECT path, coded(image) AS out FROM photos").collect()
    model = keras.saving.load_model(lambda_model_file, safe_mode=False)
    expected = model.predict(np.concatenate([keras_tensor(f, (32, 32), mode="tf") for f in photos]),
                             verbose=0)
    outputs = {local(r.path): r.out for r in rows}
    np.testing.assert_allclose([outputs[f] for f in photos], expected, **TOLERANCE)


def test_sha256_in_the_manifest_is_checked_before_loading(spark, cnn_file):
    digest = hashlib.sha256(cnn_file.read_bytes()).hexdigest()
    sql_dl.bootstrap(spark, {"models": {"pinned": {"path": str(cnn_file), "sha256": digest}}})
    wrong = "0" * 64
    with pytest.raises(ModelLoadError, match=rf"models\.pinned\.path: {cnn_file} does not have the "
                                             rf"SHA-256 the manifest gives.*Received: "
                                             rf"sha256={digest}, expected {wrong}"):
        sql_dl.bootstrap(spark, {"models": {"pinned": {"path": str(cnn_file), "sha256": wrong}}})


def test_sha256_checks_files_not_directories(spark, tmp_path):
    saved = tmp_path / "saved"
    tiny_cnn().export(saved, verbose=False)
    with pytest.raises(ModelLoadError, match=rf"models\.dir\.path: sha256 checks a single file, "
                                             rf"and this is a directory \(a SavedModel\).*"
                                             rf"Received: path='{saved}'"):
        sql_dl.bootstrap(spark, {"models": {"dir": {"path": str(saved), "sha256": "a" * 64}}})


def python_worker_memory() -> dict[int, int]:
    """Resident memory (kB) of each of PySpark's Python worker processes on this machine."""
    sizes = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if b"pyspark.daemon" in (entry / "cmdline").read_bytes():
                status = (entry / "status").read_text()
                sizes[int(entry.name)] = int(status.split("VmRSS:")[1].split()[0])
        except (OSError, IndexError):  # the process ended, or is a zombie
            continue
    return sizes


def temp_files(spark) -> set[Path]:
    """Files in the temporary folders, but sql_dl_devices' registry (a file per live Python
    worker, which a replaced worker's replacement writes)."""
    roots = {Path(tempfile.gettempdir()), Path(spark.sparkContext._temp_dir)}
    return {p for root in roots for p in root.rglob("*") if p.is_file()
            and "pytest-of-" not in str(p) and p.parent.name != "sql_dl-workers"}


@pytest.mark.slow
def test_thirty_queries_keep_worker_memory_and_temp_files_flat(spark, photos_dir, cnn_file):
    sql_dl.bootstrap(spark, {"preprocessors": {"p": {"size": [32, 32], "mode": "caffe"}},
                             "models": {"m": {"path": str(cnn_file), "preprocessor": "p"}},
                             "images": {"photos": {"path": str(photos_dir)}},
                             "cache": False})  # every query runs the model
    query = "SELECT m(image), m_features(image), m_top_k(image, 3), p(image) FROM photos"
    spark.sql(query).collect()
    memory, files = python_worker_memory(), temp_files(spark)
    for _ in range(29):
        spark.sql(query).collect()
    after = python_worker_memory()
    # the workers that held the model already (a worker idle in the first query loads it
    # later: that is its first load, not growth)
    loaded = {pid for pid in memory if memory[pid] > 0.5 * max(memory.values())}
    grown = {pid: (memory[pid], after[pid]) for pid in loaded & after.keys()
             if after[pid] > 1.10 * memory[pid]}
    assert loaded & after.keys() and not grown
    assert not temp_files(spark) - files  # (Spark's cleaner may remove older shuffle files)
