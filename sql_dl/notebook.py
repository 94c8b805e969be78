"""Results people can see in a notebook: `show` renders a DataFrame's first rows as an HTML
table, images as thumbnails, top-k arrays as "label (probability)" lists and long float
arrays shortened. Rendering happens on the driver, for the rows shown only."""

from __future__ import annotations

import html
from typing import Any

from sql_dl.images import thumbnail_url
from sql_dl.rules import THUMBNAIL_SIZE

__all__ = ["Table", "show"]

FLOATS_SHOWN = 4  # values shown of a long float array


class Table:
    """The first rows of a result: ``_repr_html_`` for notebooks, ``repr`` for terminals."""

    def __init__(self, columns: list[str], rows: list[tuple]):
        self.columns = columns
        self.rows = rows

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{_cell_html(v)}</td>" for v in row) + "</tr>"
                       for row in self.rows)
        return (f'<table class="sql_dl"><thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        lines = ["\t".join(self.columns)]
        lines += ["\t".join(_cell_text(v) for v in row) for row in self.rows]
        return "\n".join(lines)


def show(data, n: int = 20) -> Table:
    """The first ``n`` rows of a DataFrame, or of SQL text run on the active session, to
    display (a notebook shows the returned `Table` as HTML).

    Raises:
        ValueError: ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"show: n must be a positive integer. Received: n={n!r}")
    if isinstance(data, str):
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            raise ValueError("show: SQL text needs an active Spark session; build one with "
                             "sql_dl.session(...) first, or pass a DataFrame. "
                             f"Received: {data[:60]!r}")
        data = spark.sql(data)
    rows = data.limit(n).collect()  # only the rows shown leave the executors
    return Table(list(data.columns), [tuple(row) for row in rows])


def _cell_html(value: Any) -> str:
    url = _image_url(value)
    if url is not None:
        return f'<img src="{url}" style="max-width:{THUMBNAIL_SIZE}px">'
    return html.escape(_cell_text(value))


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
