"""SQL text sql_dl writes: identifiers and string literals quoted the one way Spark reads."""

from __future__ import annotations

__all__ = ["identifier", "string_literal"]


def identifier(name: str) -> str:
    """``name`` as a back-quoted Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def string_literal(value: str) -> str:
    """``value`` as a single-quoted Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
