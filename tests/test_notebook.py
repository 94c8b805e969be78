"""sql_dl.show: a result's first rows as HTML, images as thumbnails, checked by decoding
what the HTML carries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from helpers.data import decoded
from helpers.reference import local

import sql_dl
from sql_dl.executor.images import thumbnail_url
from sql_dl.notebook import show
from sql_dl.rules import THUMBNAIL_SIZE

QUERY = ("SELECT path, image, cnn_top_k(image, 2) AS top, cnn_features(image) AS features "
         "FROM photos ORDER BY path")


@pytest.fixture(scope="module")
def photos_view(spark, photos_dir, cnn_file, labels_file):
    sql_dl.bootstrap(spark, {
        "preprocessors": {"p": {"size": [32, 32], "mode": "caffe"}},
        "models": {"cnn": {"path": str(cnn_file), "preprocessor": "p",
                           "labels": str(labels_file)}},
        "images": {"photos": {"path": str(photos_dir)}},
        "indexes": {"photos_like": {"view": "photos", "function": "cnn_features"}}})
    return spark


def test_show_renders_thumbnails_top_k_and_short_arrays(photos_view, photos):
    table = show(photos_view.sql(QUERY), n=len(photos))
    page = table._repr_html_()
    urls = re.findall(r'<img src="([^"]+)"', page)
    assert len(urls) == len(photos) == len(table.rows)
    for url, row in zip(urls, table.rows):
        original = Image.open(local(row[0]))
        thumbnail = decoded(url)
        assert max(thumbnail.size) == min(THUMBNAIL_SIZE, max(original.size))
        assert abs(thumbnail.width / thumbnail.height - original.width / original.height) < 0.05
        assert thumbnail.getextrema() != ((0, 0),) * len(thumbnail.getbands())  # not blank
        transparent = original.mode in ("RGBA", "LA", "PA") or "transparency" in original.info
        assert thumbnail.format == ("PNG" if transparent else "JPEG")
    first = table.rows[0]
    labels = ", ".join(f"{t.description} ({t.probability:.2f})" for t in first[2])
    assert labels in page
    assert "… (8 values)" in page and "8 values" in repr(table)


def test_show_takes_sql_text_and_only_n_rows(photos_view):
    from_sql = show(QUERY, n=3)
    assert len(from_sql.rows) == 3
    assert from_sql._repr_html_() == show(photos_view.sql(QUERY), n=3)._repr_html_()


def test_show_of_nearest_images_shows_the_query_and_each_neighbour(photos_view, photos):
    """An index's result gets each neighbour's thumbnail (the same as sql_dl_thumbnail of
    its path), and its query's above: a path's image, or the image given."""
    query = photos_view.sql("SELECT min(path) AS p FROM photos").first().p
    table = show(photos_view.sql(f"SELECT * FROM photos_like('{query}', 3)"))
    assert table.columns == ["image", "path", "label", "distance"] and len(table.rows) == 3
    expected = dict(photos_view.sql("SELECT path, sql_dl_thumbnail(image) FROM photos")
                    .collect())
    assert [row[0] for row in table.rows] == [expected[row[1]] for row in table.rows]
    assert table.query == (query, expected[query])
    page = table._repr_html_()
    caption = re.search(r"<caption[^>]*>Nearest to (.*?)</caption>", page).group(1)
    assert re.findall(r'<img src="([^"]+)"', caption) == [expected[query]]
    assert len(re.findall(r'<img src="', page)) == 4 and query in caption
    assert repr(table).splitlines()[:2] == [f"nearest to {query}", "image\tpath\tlabel\tdistance"]

    given = show(photos_view.sql("SELECT * FROM photos_like((SELECT image FROM photos WHERE "
                                 f"path = '{query}'), 2)"))
    assert given.query == ("the image given", expected[query])
    vector = show(photos_view.sql("SELECT * FROM photos_like((SELECT cnn_features(image) "
                                  f"FROM photos WHERE path = '{query}'), 2)"))
    assert vector.query == ("the vector given", None) and len(vector.rows) == 2


def test_thumbnails_of_what_cannot_be_decoded_are_none(photos):
    assert thumbnail_url(b"not an image") is None
    assert decoded(thumbnail_url(str(photos[0]), size=16)).size[0] <= 16


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_show_needs_a_positive_n(n):
    with pytest.raises(ValueError, match=f"show: n must be a positive integer. Received: n={n!r}"):
        show("SELECT 1", n=n)


@pytest.fixture
def ipython():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "sql_dl")
    yield shell
    InteractiveShell.clear_instance()


def test_the_sql_cell_magic_runs_statements_and_shows_the_last(photos_view, photos, ipython,
                                                               capsys):
    table = ipython.run_cell_magic("sql", "-n 2 -o last", (
        "-- a view, then a query of it\n"
        "CREATE OR REPLACE TEMP VIEW few AS SELECT * FROM photos WHERE path LIKE '%.png';\n"
        "SELECT path, image, cnn_top_k(image, 1) AS top, cnn(X'00') AS bad FROM few "
        "ORDER BY path;"))
    pngs = sorted(str(p) for p in photos if p.suffix == ".png")
    assert [local(row[0]) for row in table.rows] == [Path(p) for p in pngs[:2]]
    page = table._repr_html_()
    assert len(re.findall(r'<img src="data:image/', page)) == 2
    assert f"{table.rows[0][2][0].description} ({table.rows[0][2][0].probability:.2f})" in page
    assert ipython.user_ns["last"].count() == len(pngs)  # -o keeps the whole result
    assert ("Warning: 1 image(s) could not be decoded and gave NULL"  # one distinct image
            in capsys.readouterr().err)
    assert ipython.run_cell_magic("sql", "", "CREATE OR REPLACE TEMP VIEW v AS SELECT 1") is None
    with pytest.raises(ValueError, match="%%sql: the cell has no SQL statement"):
        ipython.run_cell_magic("sql", "", "-- nothing\n")
