"""Results people can see in a notebook: `show` renders a DataFrame's first rows as an HTML
table, images as thumbnails, top-k arrays as "label (probability)" lists and long float
arrays shortened; the result of an index's table function (``<index>(query, k)``) gets the
thumbnail of each neighbour and of its query. Rendering happens on the driver, for the rows
shown only.

``%load_ext sql_dl`` adds the ``%%sql`` cell magic (`load_ipython_extension`), which runs
a cell's statements and shows the last result."""

from __future__ import annotations

import base64
import html
import io
import sys
from typing import Any

from PIL import Image

from sql_dl.driver.counts import counts
from sql_dl.errors import FunctionArgumentError
from sql_dl.executor.images import thumbnail_url
from sql_dl.rules import IMAGE_ERROR_FUNCTION, THUMBNAIL_FUNCTION, THUMBNAIL_SIZE
from sql_dl.sql_text import identifier, split_statements, string_literal

__all__ = ["Table", "load_ipython_extension", "run_cell", "show"]

ROWS_SHOWN = 20
SMALL_SHOWN = 64  # pixels a side below which an image is shown enlarged
FLOATS_SHOWN = 4  # values shown of a long float array


class Table:
    """The first rows of a result: ``_repr_html_`` for notebooks, ``repr`` for terminals;
    ``query`` (a nearest-neighbour result's) is ``(text, thumbnail data URL or None)``, shown
    above the rows."""

    def __init__(self, columns: list[str], rows: list[tuple],
                 query: tuple[str, str | None] | None = None):
        self.columns = columns
        self.rows = rows
        self.query = query

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell_html(v)}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        caption = ""
        if self.query is not None:
            text, url = self.query
            # the picture in a block of its own: inline, it would sit on the text's baseline,
            # at a fraction of a pixel
            picture = f'<div style="margin:4px 0">{_img_tag(url)}</div>' if url else ""
            caption = (f'<caption style="caption-side:top;text-align:left">Nearest to '
                       f"{html.escape(text)}{picture}</caption>")
        return (f'<table class="sql_dl">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        lines = [f"nearest to {self.query[0]}"] if self.query is not None else []
        lines.append("\t".join(self.columns))
        lines += ["\t".join(_cell_text(v) for v in row) for row in self.rows]
        return "\n".join(lines)


def show(data, n: int = ROWS_SHOWN) -> Table:
    """The first ``n`` rows of a DataFrame, or of SQL text run on the active session, to
    display (a notebook shows the returned `Table` as HTML).

    Raises:
        FunctionArgumentError: ``n`` is not a positive integer, or SQL text is given without
            an active session.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise FunctionArgumentError(f"show: n must be a positive integer. Received: n={n!r}")
    if isinstance(data, str):
        data = _active_session("show", data).sql(data)
    rows = data.limit(n).collect()  # only the rows shown leave the executors
    found = _nearest_of(data)
    if found is not None and "path" in data.columns:
        return _with_pictures(data, rows, found)
    return Table(list(data.columns), [tuple(row) for row in rows])


def _nearest_of(data) -> dict[str, str] | None:
    """What an index's table function says of its result (its ``path`` column's metadata:
    the index, its view and the query), or None for any other DataFrame."""
    fields = [f for f in data.schema.fields if f.name == "path"]
    metadata = fields[0].metadata if fields else {}
    return metadata if "sql_dl_index" in metadata else None


def _with_pictures(data, rows: list, found: dict[str, str]) -> Table:
    """A nearest-neighbour result's rows with each image's thumbnail first, and its query's
    (read from the index's view, for the rows shown and a query path only)."""
    query = found["sql_dl_query"]
    paths = {row.path for row in rows} | ({query} if query not in ("image", "vector") else set())
    thumbnails = {}
    if paths:
        listed = ", ".join(string_literal(p) for p in sorted(paths))
        thumbnails = dict(data.sparkSession.sql(
            f"SELECT path, {THUMBNAIL_FUNCTION}(image) FROM {identifier(found['sql_dl_view'])} "
            f"WHERE path IN ({listed})").collect())
    text = {"image": "the image given", "vector": "the vector given"}.get(query, query)
    picture = found.get("sql_dl_query_thumbnail") or thumbnails.get(query)
    return Table(["image", *data.columns],
                 [(thumbnails.get(row.path), *tuple(row)) for row in rows], (text, picture))


def run_cell(text: str, n: int = ROWS_SHOWN):
    """Runs SQL statements (``;``-separated) on the active session, in order, and returns
    ``(last DataFrame, its first n rows as a Table)``. Commands (CREATE, SET, ...) run; a
    query before the last one is only planned, as nothing would show it. The Table is None
    when the last statement gives no columns (DDL such as CREATE VIEW). Warnings about
    images that did not decode, or files deleted after listing, are printed to stderr, as
    ``sql-dl sql`` prints them. A failing statement raises Spark's error and stops the cell.
    """
    statements = split_statements(text)
    if not statements:
        raise FunctionArgumentError("%%sql: the cell has no SQL statement")
    spark = _active_session("%%sql", statements[0])
    frame = table = None
    for i, statement in enumerate(statements):
        before = counts(spark)
        frame = spark.sql(statement)  # runs commands; a query runs when shown
        if i == len(statements) - 1 and frame.columns:
            table = show(frame, n)
        for line in (counts(spark) - before).messages(IMAGE_ERROR_FUNCTION):
            print(line, file=sys.stderr)
    return frame, table


def load_ipython_extension(ipython) -> None:
    """``%load_ext sql_dl``: registers the ``%%sql`` cell magic in IPython/Jupyter."""
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

    @magic_arguments()
    @argument("-n", "--rows", type=int, default=ROWS_SHOWN,
              help=f"rows of the last result to show (default {ROWS_SHOWN})")
    @argument("-o", "--output", metavar="NAME",
              help="also keep the last result's DataFrame in this notebook variable")
    def sql(line: str, cell: str):
        """Runs the cell's SQL statements (separated by ;) on the active Spark session and
        shows the last one's first rows with sql_dl.show: images as thumbnails, top-k as
        'label (probability)'."""
        args = parse_argstring(sql, line)
        frame, table = run_cell(cell, args.rows)
        if args.output:
            ipython.user_ns[args.output] = frame
        return table

    ipython.register_magic_function(sql, magic_kind="cell")


def _active_session(caller: str, text: str):
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise FunctionArgumentError(
            f"{caller}: SQL text needs an active Spark session; build one with "
            "sql_dl.session(...) first, or pass a DataFrame. "
            f"Received: {text[:60]!r}")
    return spark


def _cell_html(value: Any) -> str:
    url = _image_url(value)
    if url is not None:
        return _img_tag(url)
    return html.escape(_cell_text(value))


def _img_tag(url: str) -> str:
    """An ``<img>`` of a data URL, at most `THUMBNAIL_SIZE` a side; an image smaller than
    `SMALL_SHOWN` pixels a side (digits, icons) is shown enlarged, pixelated, so that it can
    be seen."""
    style = f"max-width:{THUMBNAIL_SIZE}px;max-height:{THUMBNAIL_SIZE}px"
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as image:
            width, height = image.size  # the header only
    except Exception:  # noqa: BLE001 - a data URL from elsewhere; let the browser try
        width = height = SMALL_SHOWN
    scale = SMALL_SHOWN // max(width, height, 1)
    if scale > 1:
        style = (f"width:{width * scale}px;height:{height * scale}px;max-width:none;"
                 "image-rendering:pixelated")  # not squeezed by a wide table
    return f'<img src="{html.escape(url)}" alt="image {width}x{height}" style="{style}">'


def _image_url(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("data:image/"):
        return value
    if isinstance(value, (bytes, bytearray)) or _is_image_struct(value):
        return thumbnail_url(value if isinstance(value, bytes) else _as_dict(value))
    return None


def _is_image_struct(value: Any) -> bool:
    fields = _as_dict(value)
    return isinstance(fields, dict) and {"height", "width", "nChannels", "data"} <= set(fields)


def _as_dict(value: Any) -> Any:
    return value.asDict() if hasattr(value, "asDict") else value


def _cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, list) and value and all(
            isinstance(_as_dict(v), dict) and {"description", "probability"} <= set(_as_dict(v))
            for v in value):
        return ", ".join(f"{_as_dict(v)['description']} ({_as_dict(v)['probability']:.2f})"
                         for v in value)
    if isinstance(value, list) and len(value) > FLOATS_SHOWN and all(
            isinstance(v, float) for v in value):
        shown = ", ".join(f"{v:.4g}" for v in value[:FLOATS_SHOWN])
        return f"[{shown}, … ({len(value)} values)]"
    if _is_image_struct(value):
        fields = _as_dict(value)
        return f"<image {fields['width']}x{fields['height']}>"
    return str(value)
