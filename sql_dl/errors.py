"""Error classes raised by sql_dl."""

from __future__ import annotations

__all__ = ["ConfigurationError", "FunctionArgumentError", "ImageDecodeError", "ManifestError",
           "ModelLoadError", "SparkInternalsError", "SqlDlError", "SqlDlWarning"]


class SqlDlError(Exception):
    """Base class of every error sql_dl raises on purpose."""


class ManifestError(SqlDlError, ValueError):
    """The manifest is invalid; ``problems`` lists every problem found, one per line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ModelLoadError(SqlDlError, RuntimeError):
    """A model, its weights or its labels could not be loaded or do not fit the manifest."""


class ImageDecodeError(SqlDlError, ValueError):
    """An image could not be decoded under ``on_error: fail``."""


class SqlDlWarning(UserWarning):
    """A setting works but costs performance or surprises; the message says what to change."""


class SparkInternalsError(SqlDlError, RuntimeError):
    """A feature that reaches past PySpark's public API does not work on this Spark version;
    the message names the feature, the version and what still works."""


class FunctionArgumentError(SqlDlError, ValueError):
    """A function was called with an argument it cannot take: a SQL function (such as
    k < 0), or one of sql_dl's Python calls or Spark ML Params (such as ``show(n=0)``)."""


class ConfigurationError(SqlDlError, ValueError):
    """A setting outside the manifest (an environment variable, a Spark or server setting)
    has a value sql_dl cannot use; the message names the setting."""
