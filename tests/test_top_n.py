"""ORDER BY ... LIMIT: model functions run on the rows returned only (sql_dl's Spark
extension, jvm/), with the same answers as Keras on exactly those rows."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.reference import keras_outputs, local, TOLERANCE

import sql_dl
from sql_dl.driver.counts import counts

N = 3


@pytest.fixture(scope="module")
def views(spark, photos_dir, cnn_file, labels_file):
    sql_dl.bootstrap(spark, {
        "preprocessors": {"p32": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p32",
                           "labels": str(labels_file), "batch_size": 4}},
        "images": {"photos": {"path": str(photos_dir)}}})
    return spark


@pytest.fixture(scope="module")
def model(cnn_file):
    import keras

    return keras.saving.load_model(cnn_file)


def scored_by(spark, query: str) -> tuple[list, int]:
    """The rows, and how many images the model function answered (scored by the model or
    from the prediction cache)."""
    before = counts(spark)
    rows = spark.sql(query).collect()
    done = counts(spark) - before
    return rows, done.scored + done.cached


def plan(spark, query: str) -> str:
    return spark.sql(f"EXPLAIN {query}").first()[0]


@pytest.mark.parametrize("query, expected_files", [
    (f"SELECT path, cnn(image) AS out FROM photos ORDER BY path DESC LIMIT {N}",
     lambda photos: photos[::-1][:N]),
    (f"SELECT path, cnn(image) AS out FROM photos ORDER BY path LIMIT {N} OFFSET 2",
     lambda photos: photos[2:2 + N]),
    (f"SELECT path, cnn(image) AS out FROM photos WHERE label = 'things' "
     f"ORDER BY length DESC, path LIMIT {N}",  # by a column the query does not return
     lambda photos: sorted((p for p in photos if p.parent.name == "things"),
                           key=lambda p: (-p.stat().st_size, p.as_uri()))[:N]),
], ids=["desc", "offset", "where-and-hidden-key"])
def test_top_n_scores_only_the_rows_returned(views, photos, model, query, expected_files):
    text = plan(views, query)
    assert text.index("ArrowEvalPython") < text.index("TakeOrderedAndProject"), text  # above it
    rows, scored = scored_by(views, query)
    files = [local(r.path) for r in rows]
    assert files == expected_files(photos)
    assert scored == N  # not len(photos); with OFFSET, the skipped rows are not scored either
    np.testing.assert_allclose([r.out for r in rows], keras_outputs(model, files, "caffe"),
                               **TOLERANCE)


def test_a_sort_without_limit_scores_each_image_once_after_the_sort(views, photos, model):
    """ORDER BY without LIMIT: the model runs above the sort, once per row; below it, the
    range partitioner's sampling pass ran it on every row too (the Images: line doubled)."""
    query = "SELECT path, cnn(image) AS out FROM photos ORDER BY path DESC"
    text = plan(views, query)
    assert text.index("ArrowEvalPython") < text.index("Sort ["), text  # above the sort
    rows, scored = scored_by(views, query)
    assert scored == len(photos)
    files = [local(r.path) for r in rows]
    assert files == photos[::-1]
    np.testing.assert_allclose([r.out for r in rows], keras_outputs(model, files, "caffe"),
                               **TOLERANCE)


def test_ordering_by_a_model_output_still_scores_everything(views, photos, model):
    query = ("SELECT path, cnn_top_k(image, 1)[0].probability AS p FROM photos "
             f"ORDER BY p DESC, path LIMIT {N}")
    text = plan(views, query)
    assert text.index("TakeOrderedAndProject") < text.index("ArrowEvalPython"), text
    rows, scored = scored_by(views, query)
    assert scored == len(photos)
    best = keras_outputs(model, photos, "caffe").max(axis=1)
    expected = sorted(zip(-best, [p.as_uri() for p in photos]))[:N]
    assert [local(r.path) for r in rows] == [local(uri) for _, uri in expected]
    np.testing.assert_allclose([r.p for r in rows], [-b for b, _ in expected], **TOLERANCE)


@pytest.mark.slow  # end to end: a session of its own, in a process of its own (17 s)
def test_a_session_without_the_extension_is_told_once(tmp_path, cnn_file, photos_dir, photos):
    """A classic session the user built without sql_dl's settings: bootstrap warns once, with
    the two settings that fix it, and top-N queries still answer correctly."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent("""
        import sys
        import warnings
        from pyspark.sql import SparkSession
        import sql_dl

        spark = SparkSession.builder.master("local[1]").getOrCreate()
        manifest = {"preprocessors": {"p": {"size": [32, 32], "mode": "caffe"}},
                    "models": {"cnn": {"path": sys.argv[1], "preprocessor": "p"}},
                    "images": {"photos": {"path": sys.argv[2]}}}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sql_dl.bootstrap(spark, manifest)
            sql_dl.bootstrap(spark, manifest)
        for warning in caught:
            print("warning:", warning.message)
        def work():  # the prediction cache may hold some of these images' outputs
            return sql_dl.scored_image_count(spark) + sql_dl.cached_image_count(spark)

        before = work()
        spark.sql("SELECT cnn(image) FROM photos ORDER BY path LIMIT 1").collect()
        print("scored:", work() - before)
    """))
    result = subprocess.run([sys.executable, str(script), str(cnn_file), str(photos_dir)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: sql_dl's Spark extension is not active in this "
                                  "session, so ORDER BY ... LIMIT n queries run model functions "
                                  "on every row")
    assert f'.config("spark.sql.extensions", "{sql_dl.spark.extension.EXTENSIONS}")' in warnings[0]
    assert f"scored: {len(photos)}" in result.stdout.splitlines()  # all, as the warning said
