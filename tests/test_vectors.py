"""Spark's own vector functions (4.3: ``vector_cosine_similarity``, ``vector_l2_distance``,
``vector_inner_product``, ``vector_normalize``, and ``JOIN ... APPROX NEAREST k BY``) on
sql_dl's ``<model>_features``, as the SQL reference shows them, against numpy on the same
features."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.processes import doc_blocks
from helpers.reference import local

import sql_dl


@pytest.fixture(scope="module")
def views(spark, photos_dir, cnn_file, labels_file):
    sql_dl.bootstrap(spark, {
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32",
                           "labels": str(labels_file)}},
        "images": {"photos": {"path": str(photos_dir)}}})
    return spark


@pytest.fixture(scope="module")
def features(views) -> dict[str, np.ndarray]:
    """Each photo's features, as sql_dl gives them."""
    return {r.path: np.asarray(r.f, dtype=np.float64) for r in
            views.sql("SELECT path, cnn_features(image) AS f FROM photos").collect()}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_images_most_like_one_image(views, features, photos):
    most_like, = doc_blocks("**Images most like one image**", 1)
    query = photos[0]
    rows = views.sql(most_like.replace("/digits/3/0045.png", f"/{query.parent.name}/"
                                       f"{query.name}").replace("digits_cnn", "cnn")
                     .replace("FROM digits", "FROM photos")).collect()
    given = next(v for p, v in features.items() if local(p) == query)
    similarity = {p: _cosine(v, given) for p, v in features.items()}
    # each row's similarity is numpy's, and they are numpy's five largest, in order
    np.testing.assert_allclose([r.similarity for r in rows],
                               [similarity[r.path] for r in rows], rtol=1e-5)
    np.testing.assert_allclose([r.similarity for r in rows],
                               sorted(similarity.values(), reverse=True)[:5], rtol=1e-5)
    assert any(local(r.path) == query for r in rows)


def test_distances_equal_numpy(views, features):
    rows = views.sql("""
        WITH f AS (SELECT path, cnn_features(image) AS v FROM photos)
        SELECT a.path AS a, b.path AS b, vector_l2_distance(a.v, b.v) AS l2,
               vector_inner_product(a.v, b.v) AS inner,
               vector_cosine_similarity(a.v, b.v) AS cosine,
               vector_inner_product(vector_normalize(a.v, 2.0F), vector_normalize(b.v, 2.0F)) AS unit
        FROM f a CROSS JOIN f b""").collect()
    assert len(rows) == len(features) ** 2
    for r in rows:
        a, b = features[r.a], features[r.b]
        assert r.l2 == pytest.approx(np.linalg.norm(a - b), rel=1e-4, abs=1e-5)
        assert r.inner == pytest.approx(a @ b, rel=1e-4, abs=1e-5)
        assert r.cosine == pytest.approx(_cosine(a, b), rel=1e-4, abs=1e-6)
        assert r.unit == pytest.approx(_cosine(a, b), rel=1e-4, abs=1e-6)


def test_near_duplicates_by_a_nearest_join(views, features):
    nearest, = doc_blocks("**Near-duplicates**", 1)
    rows = views.sql(nearest.replace("digits_cnn", "cnn").replace("FROM digits", "FROM photos")
                     ).collect()
    paths = list(features)
    vectors = np.stack([features[p] for p in paths])
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    np.fill_diagonal(distances, np.inf)  # another image, not itself
    expected = {paths[i]: (paths[int(distances[i].argmin())], float(distances[i].min()))
                for i in range(len(paths))}
    assert {r.path: r.nearest for r in rows} == {p: n for p, (n, _) in expected.items()}
    for r in rows:
        assert r.distance == pytest.approx(expected[r.path][1], rel=1e-4, abs=1e-5)
