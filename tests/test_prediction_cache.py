"""The prediction cache: repeated queries over unchanged images are answered from each
executor's cache, bit for bit, and nothing stale is ever served."""

from __future__ import annotations

import io
import multiprocessing
import shutil
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers.data import tiny_cnn
from helpers.reference import keras_outputs, local, TOLERANCE

import sql_dl
from sql_dl.cli.shell import SqlShell
from sql_dl.driver.counts import counts
from sql_dl.executor.prediction_cache import PredictionCache, cache_path

# no ORDER BY: Spark would run the functions twice (once to sample the sort keys)
QUERY = "SELECT path, m(image) AS out, m_features(image) AS features, m_top_k(image, 2) AS top " \
        "FROM live"


def manifest(folder: Path, model_file: Path, mode: str = "tf", section: dict | None = None,
             **model) -> dict:
    """A manifest of model ``m`` (``model`` adds keys to its entry) and view ``live``, with
    ``section`` as its ``cache:`` section."""
    data = {"preprocessors": {"p": {"size": [32, 32], "mode": mode}},
            "models": {"m": {"path": str(model_file), "preprocessor": "p", **model}},
            "images": {"live": {"path": str(folder)}}}
    if section is not None:
        data["cache"] = section
    return data


def run(spark, query: str = QUERY):
    """The rows (by path) and the counts of the query."""
    before = counts(spark)
    rows = spark.sql(query).collect()
    return sorted(rows, key=lambda r: r[0]), counts(spark) - before


@pytest.fixture
def images(tmp_path, photos) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.fixture
def model_file(tmp_path) -> Path:
    """A model no other test scored images with (its content is its own)."""
    path = tmp_path / "model.keras"
    tiny_cnn(seed=zlib.crc32(str(tmp_path).encode()) % 100_000).save(path)
    return path


def keras_rows(model_file: Path, rows, mode: str = "tf") -> np.ndarray:
    import keras

    return keras_outputs(keras.saving.load_model(model_file), [local(r.path) for r in rows], mode)


def test_a_repeated_query_is_answered_from_the_cache_bit_for_bit(spark, images, model_file):
    sql_dl.bootstrap(spark, manifest(images, model_file))
    n = len(list(images.iterdir()))
    first, done = run(spark)
    assert done.scored + done.cached == 3 * n and done.scored >= 2 * n  # out, features; top-k
    np.testing.assert_allclose([r.out for r in first], keras_rows(model_file, first), **TOLERANCE)
    again, done = run(spark)
    assert (done.scored, done.cached) == (0, 3 * n)  # no image decoded, no model called
    assert again == first  # bit for bit: floats, features and top-k
    stats = {r.model: r for r in spark.sql("SELECT * FROM sql_dl_cache").collect()}
    assert stats["m"].entries >= n and stats["m_features"].entries == n
    assert stats["m"].hits >= 2 * n and stats["m_features"].hits == n
    assert stats["m"].bytes > 0 and stats["m"].directory == str(cache_path().parent)


def test_an_image_rewritten_in_place_is_scored_again(spark, images, model_file):
    from PIL import Image

    sql_dl.bootstrap(spark, manifest(images, model_file))
    run(spark)
    target = sorted(images.iterdir())[0]
    Image.open(target).rotate(90).save(target)  # the same path, new pixels
    rows, done = run(spark)
    assert done.scored == 2  # the rewritten image, by m and m_features; the others are cached
    np.testing.assert_allclose([r.out for r in rows], keras_rows(model_file, rows), **TOLERANCE)


def test_a_changed_model_or_preprocessor_is_never_answered_from_the_cache(
        spark, images, model_file):
    n = len(list(images.iterdir()))
    sql_dl.bootstrap(spark, manifest(images, model_file))
    run(spark)
    tiny_cnn(seed=12345).save(model_file)  # the same path, new weights
    sql_dl.bootstrap(spark, manifest(images, model_file))
    rows, done = run(spark)
    assert (done.scored, done.cached) == (2 * n, n)  # top-k reads what m just cached
    np.testing.assert_allclose([r.out for r in rows], keras_rows(model_file, rows), **TOLERANCE)
    sql_dl.bootstrap(spark, manifest(images, model_file, mode="caffe"))
    rows, done = run(spark)
    assert (done.scored, done.cached) == (2 * n, n)
    np.testing.assert_allclose([r.out for r in rows], keras_rows(model_file, rows, "caffe"),
                               **TOLERANCE)


@pytest.mark.parametrize("switch", ["global", "model"])
def test_the_cache_can_be_switched_off(spark, images, model_file, switch):
    n = len(list(images.iterdir()))
    off = {"section": {"predictions": False}} if switch == "global" else {"cache": False}
    sql_dl.bootstrap(spark, manifest(images, model_file, **off))
    stats = "SELECT entries, hits FROM sql_dl_cache WHERE model LIKE 'm%' ORDER BY model"
    before = spark.sql(stats).collect()  # other tests' models named m
    first, _ = run(spark)
    again, done = run(spark)
    assert (done.scored, done.cached) == (3 * n, 0)
    np.testing.assert_allclose([r.out for r in again], [r.out for r in first], **TOLERANCE)
    assert spark.sql(stats).collect() == before


def test_the_cache_stays_within_its_bound(spark, tmp_path):
    import keras

    keras.utils.set_random_seed(5)
    wide = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(2000, name="wide")])  # 8 kB per output
    wide.save(tmp_path / "wide.keras")
    from PIL import Image

    folder = tmp_path / "many"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    for i, pixels in enumerate(noise):
        Image.fromarray(pixels).save(folder / f"{i:02}.png")
    n = len(noise)
    sql_dl.bootstrap(spark, {
        "preprocessors": {"p": {"size": [32, 32], "mode": "scale"}},
        "models": {"wide": {"path": str(tmp_path / "wide.keras"), "preprocessor": "p"}},
        "images": {"many": {"path": str(folder)}},
        "cache": {"max_size": "128KB"}})
    rows = spark.sql("SELECT path, wide(image) AS out FROM many").collect()
    assert len(rows) == n
    assert PredictionCache(cache_path()).total_bytes() <= 128 * 1024
    stats = spark.sql("SELECT entries, bytes FROM sql_dl_cache WHERE model = 'wide'").first()
    assert 0 < stats.entries < 16 and stats.bytes <= 128 * 1024
    _, done = run(spark, "SELECT wide(image) FROM many")
    assert done.scored + done.cached == n and done.scored > 0


def test_least_recently_used_outputs_are_evicted_first(tmp_path):
    cache = PredictionCache(tmp_path / "c.sqlite3", max_bytes=1 << 16)
    output = np.zeros(1000, np.float32)  # 4 kB: the bound holds 15 rows with their overhead
    keys = cache.keys("model", [f"image {i}".encode() for i in range(40)])
    cache.put("model", "m", [(k, output + i) for i, k in enumerate(keys[:10])])
    cache.touch("model", "m", [keys[0]])  # used again: the last to go
    cache.put("model", "m", [(k, output + i) for i, k in enumerate(keys[10:20], 10)])
    found = cache.get(keys, 1000)
    evicted = set(keys[:20]) - set(found)
    assert len(evicted) == 6 and evicted < set(keys[1:10])  # the oldest, never used again
    assert keys[0] in found and set(keys[10:20]) <= set(found)
    np.testing.assert_array_equal(found[keys[19]], output + 19)
    assert cache.total_bytes() <= 1 << 16


def _hammer(path: str, worker: int) -> None:
    cache = PredictionCache(Path(path), max_bytes=1 << 18)
    for round_ in range(40):
        values = [f"image {worker * 1000 + round_ * 10 + j}".encode() for j in range(10)]
        keys = cache.keys("model", values)
        cache.put("model", "m", [(k, np.full(100, i, np.float32)) for i, k in
                                 zip(range(round_ * 10, round_ * 10 + 10), keys)])
        for key, output in cache.get(keys, 100).items():
            assert output[0] == round_ * 10 + keys.index(key)


def test_concurrent_workers_do_not_corrupt_it(tmp_path):
    path = tmp_path / "shared.sqlite3"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(str(path), w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * 4
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = db.execute("SELECT count(*), sum(length(key) + length(value) + 64) "
                            "FROM outputs").fetchone()
    assert 0 < stored[0] < 1600 and stored[1] <= 1 << 18  # bounded while 4 wrote at once
    assert PredictionCache(path).total_bytes() == stored[1]


@pytest.mark.parametrize("damage", ["garbage file", "changed value"])
def test_a_corrupt_cache_is_discarded_never_served(spark, images, model_file, damage):
    n = len(list(images.iterdir()))
    sql_dl.bootstrap(spark, manifest(images, model_file))
    first, _ = run(spark)
    path = cache_path()
    if damage == "garbage file":  # say, a disk fault: garbage in place of file and journal
        garbage = path.with_name("garbage")
        garbage.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
        garbage.replace(path)
        for journal in ("-wal", "-shm"):
            Path(f"{path}{journal}").unlink(missing_ok=True)
    else:
        with sqlite3.connect(path) as db:  # another process's write that went wrong
            db.execute("UPDATE outputs SET value = zeroblob(length(value))")
    rows, done = run(spark)
    assert done.scored >= 2 * n  # nothing stale: every image scored again
    np.testing.assert_allclose([r.out for r in rows], [r.out for r in first], **TOLERANCE)
    with sqlite3.connect(path) as db:  # a new, healthy file
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    again, done = run(spark)
    assert done.cached == 3 * n and again == rows


def test_the_shell_reports_images_from_the_cache(spark, images, model_file):
    n = len(list(images.iterdir()))
    sql_dl.bootstrap(spark, manifest(images, model_file))
    err = io.StringIO()
    shell = SqlShell(spark, out=io.StringIO(), err=err)
    assert shell.run("SELECT m(image) FROM live")
    first = err.getvalue().splitlines()
    assert shell.run("SELECT m(image) FROM live")
    # a line for every statement that ran a model: scored (the first time) or cached
    assert first[-2].startswith("Images: ") and first[-2].endswith(" from the prediction cache")
    assert err.getvalue().splitlines()[-2] == f"Images: 0 scored, {n} from the prediction cache"
    assert shell.run("SELECT count(*) FROM live")  # no model: no Images line
    assert not err.getvalue().splitlines()[-2].startswith("Images: ")
    assert err.getvalue().splitlines()[-1].startswith("Time taken: ")
    silent = SqlShell(spark, out=io.StringIO(), err=io.StringIO(), silent=True)
    assert silent.run("SELECT m(image) FROM live") and silent.err.getvalue() == ""


@pytest.mark.parametrize("section, message", [
    ({"max_size": "tiny"}, "cache.max_size: must be a size of at least 64KB"),
    ({"max_size": 1000}, "cache.max_size: must be a size of at least 64KB"),
    ({"predictions": "yes"}, "cache.predictions: must be true or false"),
    ({"size": "1GB"}, "cache.size: unknown key; the keys are predictions, max_size"),
    ("on", "cache: must be a mapping of keys \\(predictions, max_size\\), or false"),
])
def test_cache_settings_are_checked(tmp_path, section, message):
    with pytest.raises(sql_dl.ManifestError, match=message):
        sql_dl.load_manifest({"cache": section})


def test_cache_defaults_and_sizes(tmp_path):
    assert sql_dl.load_manifest({}).cache.max_size == 1 << 30
    assert sql_dl.load_manifest({"cache": {"max_size": "2GB"}}).cache.max_size == 2 << 30
    assert not sql_dl.load_manifest({"cache": {"predictions": False}}).cache.predictions
    assert not sql_dl.load_manifest({"cache": False}).cache.predictions


@pytest.mark.slow
def test_the_cache_outlives_the_session_and_serves_a_cluster(spark, images, model_file, tmp_path):
    """Another process (sql-dl sql on local-cluster: executors of their own) finds the outputs
    this session stored, as a restarted server does; the view lists the folder as it is."""
    import yaml
    from helpers.processes import run_cli as sql_dl_command

    data = manifest(images, model_file)
    sql_dl.bootstrap(spark, data)
    run(spark)
    shutil.copy(sorted(images.iterdir())[0], images / "copy.png")  # stored under its bytes
    manifest_file = tmp_path / "models.yaml"
    manifest_file.write_text(yaml.safe_dump(data))
    result = sql_dl_command("sql", "--home", tmp_path / "home", "--manifest", manifest_file,
                            "--master", "local-cluster[2,1,2048]", "-e",
                            "SELECT count(m(image)) FROM live")
    assert result.returncode == 0, result.stderr
    n = len(list(images.iterdir()))
    assert result.stdout.split() == [str(n)]
    assert f"Images: 0 scored, {n} from the prediction cache" in result.stderr.splitlines()


def test_a_cache_file_of_another_format_is_started_afresh(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # as an earlier sql_dl would have left it
        db.execute("CREATE TABLE outputs (key BLOB PRIMARY KEY, value BLOB)")
        db.execute("INSERT INTO outputs VALUES (x'00', x'00')")
    cache = PredictionCache(path)
    keys = cache.keys("model", [b"image"])
    assert cache.get(keys, 1) == {}
    cache.put("model", "m", [(keys[0], np.ones(1, np.float32))])
    assert list(cache.get(keys, 1)) == keys
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
