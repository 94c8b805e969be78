"""SQL text: identifiers and string literals quoted the one way Spark reads, and scripts split
into statements."""

from __future__ import annotations

from typing import Any, Sequence

import sqlparse

__all__ = ["identifier", "split_statements", "string_literal", "values_query"]


def identifier(name: str) -> str:
    """``name`` as a back-quoted Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def string_literal(value: str) -> str:
    """``value`` as a single-quoted Spark SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def values_query(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> str:
    """A SELECT that yields ``rows`` (strings, integers or None) as the ``columns``,
    ``(name, SQL type)`` pairs, from literals alone: no job, no Python worker."""
    def literal(value) -> str:
        if value is None:
            return "NULL"
        return str(int(value)) if isinstance(value, int) else string_literal(str(value))

    values = ", ".join(f"({', '.join(literal(v) for v in row)})"
                       for row in rows or [[None] * len(columns)])
    names = ", ".join(identifier(name) for name, _ in columns)
    casts = ", ".join(f"CAST({identifier(name)} AS {kind}) AS {identifier(name)}"
                      for name, kind in columns)
    return f"SELECT {casts} FROM VALUES {values} AS t({names}){'' if rows else ' WHERE false'}"


def split_statements(text: str) -> list[str]:
    """Splits SQL text into statements at semicolons outside quotes and comments."""
    statements = []
    for statement in sqlparse.split(text):
        code = sqlparse.format(statement, strip_comments=True).strip().rstrip(";").strip()
        if code:
            statements.append(statement.strip().rstrip(";").strip())
    return statements
