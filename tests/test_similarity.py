"""Embedding indexes (``indexes:``) and their table functions, ``<index>(query, k)``: answers
against numpy's exact search on the same vectors, work counted (each image embedded once, only
new images embedded after), the index following its folder, errors, ``sql_dl_indexes``,
``DESCRIBE FUNCTION`` and the index's folder on disk (`sql_dl.driver.vector_index`)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
from pyspark.errors import AnalysisException

import sql_dl
from sql_dl.driver.counts import counts
from sql_dl.driver.vector_index import VectorIndex, distances
from sql_dl.manifest import check_manifest


def _manifest(photos_dir, cnn_file, folder, metric="cosine", function="cnn_features"):
    return {"preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
            "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32"}},
            "images": {"photos": {"path": str(photos_dir)}, "moving": {"path": str(folder)}},
            "indexes": {"photos_like": {"view": "photos", "function": function,
                                        "metric": metric},
                        "moving_like": {"view": "moving", "function": "cnn_features"}}}


@pytest.fixture(scope="module")
def moving(tmp_path_factory, photos):
    """A folder that tests add images to and delete them from."""
    folder = tmp_path_factory.mktemp("moving")
    for photo in photos[:3]:
        shutil.copy(photo, folder / f"m_{photo.name}")
    return folder


@pytest.fixture(scope="module")
def indexed(spark, photos_dir, cnn_file, moving):
    sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, moving))
    return spark


@pytest.fixture(scope="module")
def features(indexed) -> dict[str, np.ndarray]:
    """Each photo's vector, as cnn_features gives it."""
    return {r.path: np.asarray(r.f, dtype=np.float32) for r in
            indexed.sql("SELECT path, cnn_features(image) AS f FROM photos").collect()}


def _exact(features, query, k, metric="cosine"):
    """numpy's k nearest paths and their distances."""
    paths = sorted(features)
    d = distances(np.asarray(query, dtype=np.float32), np.stack([features[p] for p in paths]),
                  metric)
    order = np.argsort(d, kind="stable")[:k]
    return [paths[i] for i in order], d[order]


def _assert_nearest(rows, features, query, k, metric="cosine"):
    """The rows are numpy's k nearest (ties in either order), with numpy's distances."""
    expected, expected_distances = _exact(features, query, k, metric)
    assert len(rows) == len(expected)
    np.testing.assert_allclose([r.distance for r in rows], expected_distances, atol=1e-5)
    ours = distances(np.asarray(query, dtype=np.float32),
                     np.stack([features[r.path] for r in rows]), metric)
    np.testing.assert_allclose([r.distance for r in rows], ours, atol=1e-5)


def test_path_query_gives_the_nearest_images(indexed, features):
    query = sorted(features)[2]
    rows = indexed.sql(f"SELECT * FROM photos_like('{query}', 4)").collect()
    assert [tuple(r.asDict()) for r in rows][:1] == [("path", "label", "distance")]
    assert query in [r.path for r in rows if r.distance < 1e-6]  # the photos have twins
    _assert_nearest(rows, features, features[query], 4)
    assert [r.label for r in rows] == [r.path.split("/")[-2] for r in rows]


def test_every_kind_of_query_gives_the_same_answer(indexed, features):
    query = sorted(features)[5]
    local = query.removeprefix("file:")
    by_path = indexed.sql(f"SELECT * FROM photos_like('{local}', 3)").collect()
    subqueries = {
        "a path": f"(SELECT path FROM photos WHERE path = '{query}')",
        "an image": f"(SELECT image FROM photos WHERE path = '{query}')",
        "a vector": f"(SELECT cnn_features(image) FROM photos WHERE path = '{query}')"}
    for kind, subquery in subqueries.items():
        rows = indexed.sql(f"SELECT * FROM photos_like({subquery}, 3)").collect()
        assert [r.path for r in rows] == [r.path for r in by_path], kind
    with open(local, "rb") as f:
        image = f.read()
    given = indexed.sql("SELECT * FROM photos_like(:image, 3)", args={"image": image})
    assert [r.path for r in given.collect()] == [r.path for r in by_path]
    vector = ", ".join(f"{v!r}F" for v in features[query].tolist())
    literal = indexed.sql(f"SELECT * FROM photos_like(array({vector}), 3)").collect()
    assert [r.path for r in literal] == [r.path for r in by_path]
    _assert_nearest(literal, features, features[query], 3)


def test_distances_are_spark_vector_functions(indexed, features):
    """distance = 1 - vector_cosine_similarity, from Spark itself on the same arrays."""
    query = sorted(features)[0]
    rows = indexed.sql(f"""
        SELECT n.path, n.distance, 1 - vector_cosine_similarity(q.f, cnn_features(p.image)) AS d
        FROM photos_like('{query}', 5) n
        JOIN photos p ON p.path = n.path
        CROSS JOIN (SELECT cnn_features(image) AS f FROM photos WHERE path = '{query}') q
        """).collect()
    assert len(rows) == 5
    np.testing.assert_allclose([r.distance for r in rows], [r.d for r in rows], atol=1e-5)


@pytest.mark.parametrize("metric", ["l2", "inner"])
def test_other_metrics(spark, photos_dir, cnn_file, moving, features, metric):
    sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, moving, metric=metric))
    try:
        query = sorted(features)[1]
        rows = spark.sql(f"SELECT * FROM photos_like('{query}', 5)").collect()
        _assert_nearest(rows, features, features[query], 5, metric)
    finally:
        sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, moving))


def test_each_image_is_embedded_once_and_the_index_follows_its_folder(indexed, moving, photos):
    first = indexed.sql("SELECT path FROM moving ORDER BY path LIMIT 1").first().path
    indexed.sql(f"SELECT * FROM moving_like('{first}', 2)").collect()  # built
    before = counts(indexed)
    rows = indexed.sql(f"SELECT * FROM moving_like('{first}', 2)").collect()
    assert (counts(indexed) - before)[:2] == (0, 0)  # nothing embedded again
    assert rows[0].path == first

    added = moving / "added.png"
    shutil.copy(photos[4], added)
    before = counts(indexed)
    rows = indexed.sql(f"SELECT * FROM moving_like('{added}', 10)").collect()
    done = counts(indexed) - before
    assert done.scored + done.cached == 1  # the new image only
    assert rows[0].path == f"file:{added}" and rows[0].distance == pytest.approx(0, abs=1e-6)
    assert len(rows) == 4

    (moving / f"m_{photos[0].name}").unlink()
    rows = indexed.sql(f"SELECT * FROM moving_like('{added}', 10)").collect()
    assert f"file:{moving / f'm_{photos[0].name}'}" not in [r.path for r in rows]
    assert len(rows) == 3
    state = indexed.sql("SELECT * FROM sql_dl_indexes WHERE index = 'moving_like'").first()
    assert (state.state, state.images, state.listed, state.dimensions) == ("ready", 3, 3, 8)


def test_sql_dl_indexes(indexed, features):
    indexed.sql(f"SELECT * FROM photos_like('{sorted(features)[0]}', 1)").collect()
    row = indexed.sql("SELECT * FROM sql_dl_indexes WHERE index = 'photos_like'").first()
    assert (row.view, row.function, row.metric, row.state, row.images, row.listed) == (
        "photos", "cnn_features", "cosine", "ready", len(features), len(features))
    assert row.last_update is not None and row.memory_bytes > 0 and row.problem is None
    assert row.directory.startswith(indexed.conf.get("spark.sql.warehouse.dir")
                                    .removeprefix("file:"))


def test_describe_function(indexed):
    lines = [r[0] for r in indexed.sql("DESCRIBE FUNCTION EXTENDED photos_like").collect()]
    text = "\n".join(lines)
    assert lines[0] == "Function: photos_like"
    assert ("Usage: photos_like(query[, k]) - the k (default 10, at most 1000) images of view "
            "photos nearest to query, by cosine distance") in text
    assert "query - an image (BINARY), the path of an image of photos (STRING)" in text


def test_result_names_its_query(indexed, features):
    query = sorted(features)[0]
    frame = indexed.sql(f"SELECT * FROM photos_like('{query}', 2)")
    assert frame.schema["path"].metadata == {"sql_dl_index": "photos_like",
                                             "sql_dl_view": "photos", "sql_dl_query": query}


@pytest.mark.parametrize("call, message", [
    ("photos_like(array(1.0F, 2.0F), 3)",
     "photos_like(query, k): the query vector has 2 values; cnn_features gives vectors of 8"),
    ("photos_like('{query}', 0)",
     "photos_like(query, k): k must be an integer from 1 to 1000. Received: k=0"),
    ("photos_like('{query}', 1001)",
     "photos_like(query, k): k must be an integer from 1 to 1000. Received: k=1001"),
    ("photos_like(42, 3)",
     "photos_like(query, k): query must be an image (BINARY), the path of an image of view "
     "photos (STRING) or a vector (ARRAY<FLOAT>). Received: INT 42"),
    ("photos_like('/no/such.png', 3)",
     "photos_like(query, k): query file:/no/such.png is not an image of view photos"),
    ("photos_like(X'00010203', 3)",
     "photos_like(query, k): the query image gives no vector: cnn_features returns NULL"),
])
def test_errors(indexed, features, call, message):
    with pytest.raises(AnalysisException, match=re.escape(message)):
        indexed.sql("SELECT * FROM " + call.format(query=sorted(features)[0])).collect()


def test_view_without_images(spark, photos_dir, cnn_file, moving, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, empty))
    try:
        with pytest.raises(AnalysisException, match=re.escape(
                "moving_like: view moving has no images yet, so the index is empty; add "
                "images under the view's folder")):
            spark.sql("SELECT * FROM moving_like(array_repeat(1.0F, 8), 3)").collect()
    finally:
        sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, moving))


def test_a_search_waits_for_a_build_only_as_long_as_it_is_told(
        spark, photos_dir, cnn_file, moving, tmp_path, photos):
    """With spark.sql_dl.indexWaitSeconds=0, a search during the index's first build (in the
    background since bootstrap) fails at once, with the index's progress; later, it answers."""
    many = tmp_path / "many"
    many.mkdir()
    for i in range(40):
        for photo in photos:
            shutil.copy(photo, many / f"{i}_{photo.name}")
    sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, many))
    try:
        spark.conf.set("spark.sql_dl.indexWaitSeconds", "0")
        with pytest.raises(AnalysisException, match=re.escape(
                "moving_like: the index is being built (")) as refused:
            spark.sql("SELECT * FROM moving_like(array_repeat(1.0F, 8), 3)").collect()
        assert "search again when sql_dl_indexes shows it ready" in str(refused.value)
        spark.conf.set("spark.sql_dl.indexWaitSeconds", "120")
        rows = spark.sql("SELECT * FROM moving_like(array_repeat(1.0F, 8), 3)").collect()
        assert len(rows) == 3
    finally:
        spark.conf.unset("spark.sql_dl.indexWaitSeconds")
        sql_dl.bootstrap(spark, _manifest(photos_dir, cnn_file, moving))


@pytest.mark.parametrize("index, message", [
    ({"view": "nope", "function": "cnn_features"},
     "indexes.i.view: must name an image view of this manifest: photos"),
    ({"view": "photos", "function": "cnn_top_k"},
     "indexes.i.function: cnn_top_k returns a model's best classes (ARRAY<STRUCT>), not a "
     "vector; give a model's <model>_features (or <model>): cnn_features, cnn"),
    ({"view": "photos", "function": "p32"},
     "indexes.i.function: p32 is a preprocessor: it returns an image's pixels, not a vector"),
    ({"view": "photos", "function": "sql_dl_thumbnail"},
     "indexes.i.function: sql_dl_thumbnail is one of sql_dl's image functions"),
    ({"view": "photos", "function": "cnn_features", "metric": "dot"},
     "indexes.i.metric: must be one of cosine, l2, inner. Received: metric='dot'"),
    ({"view": "photos", "function": "cnn_features", "k": 3},
     "indexes.i.k: unknown key; the keys are view, function, metric, description"),
])
def test_manifest_errors(photos_dir, cnn_file, index, message):
    manifest = _manifest(photos_dir, cnn_file, photos_dir)
    manifest["indexes"] = {"i": index}
    _, problems = check_manifest(manifest)
    assert any(message in p for p in problems), problems


def test_an_index_takes_a_name_of_its_own(photos_dir, cnn_file):
    manifest = _manifest(photos_dir, cnn_file, photos_dir)
    manifest["indexes"] = {"photos": {"view": "photos", "function": "cnn"}}
    _, problems = check_manifest(manifest)
    assert problems == ["<manifest dict>: indexes.photos: the name is taken by images.photos; "
                        "an index's table function needs a name of its own"]


# -- the index's folder ----------------------------------------------------------------


def _listing(paths, length=1, modified=5):
    return pd.DataFrame({"path": paths, "label": "a", "length": length,
                         "modification_time": modified})


def _commit(index, listing, vectors):
    """diff, then commit the vectors of the paths diff asked for."""
    asked = index.diff(listing)["embed"]
    rows = listing if asked == "all" else listing[listing.path.isin(asked)]
    rows = rows.assign(embedded=True)
    return index.commit([(rows, vectors[rows.index.to_numpy()])])


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner"])
def test_vector_index_against_numpy(tmp_path, metric):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    paths = [f"file:/v/{i}.png" for i in range(len(vectors))]
    index = VectorIndex(tmp_path, 32, metric)
    assert _commit(index, _listing(paths), vectors)["size"] == 3000
    recalls = []
    for q in rng.normal(size=(50, 32)).astype(np.float32):
        found = index.search(q, 10)
        exact = np.argsort(distances(q, vectors, metric), kind="stable")[:10]
        recalls.append(len({paths[i] for i in exact} & set(found["path"])) / 10)
        ours = distances(q, vectors[[int(p[len("file:/v/"):-4]) for p in found["path"]]], metric)
        np.testing.assert_allclose(found["distance"], ours, rtol=1e-6, atol=1e-6)
        assert found["distance"] == sorted(found["distance"])
    assert np.mean(recalls) >= 0.95


def test_vector_index_updates_and_reloads(tmp_path):
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    paths = [f"file:/v/{i}.png" for i in range(100)]
    index = VectorIndex(tmp_path, 8, "l2")
    _commit(index, _listing(paths), vectors)
    changed = _listing(paths[1:] + ["file:/v/new.png"])
    changed.loc[changed.path == "file:/v/5.png", "length"] = 2
    asked = index.diff(changed)
    assert (sorted(asked["embed"]), asked["remove"]) == (["file:/v/5.png", "file:/v/new.png"], 1)
    new = rng.normal(size=(2, 8)).astype(np.float32)
    rows = changed[changed.path.isin(asked["embed"])].assign(embedded=[True, False])
    result = index.commit([(rows, new[:1])])
    assert (result["size"], result["listed"], result["added"], result["removed"]) == (
        99, 100, 1, 2)
    again = VectorIndex(tmp_path, 8, "l2")  # from its folder
    assert (again.size, again.listed) == (99, 100)
    np.testing.assert_array_equal(again.vector_of("file:/v/5.png"), new[0])
    assert again.vector_of("file:/v/0.png") is None and again.vector_of("file:/v/new.png") is None
    assert again.diff(changed)["embed"] == []  # the image without a vector is not asked again
    (tmp_path / "graph.usearch").write_bytes(b"torn")  # a crash while writing it
    rebuilt = VectorIndex(tmp_path, 8, "l2")
    assert rebuilt.search(new[0], 1)["path"] == ["file:/v/5.png"]
    assert VectorIndex(tmp_path, 16, "l2").size == 0  # another index: started again
