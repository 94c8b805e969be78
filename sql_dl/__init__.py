"""sql_dl: deep-learning models over image collections as Spark SQL functions.

``bootstrap(spark, "conf/models.yaml")`` registers a manifest's models, preprocessors and
image folders in a Spark session; ``session(...)`` builds a configured session and does it.

The names below are imported when first used, so that a Python worker, which imports
``sql_dl.executor`` modules only, loads none of the driver's code. Importing sql_dl (as its
workers do) keeps TensorFlow's two absl start-up lines off stderr when TensorFlow is
imported later (see `sql_dl.native_logs`).
"""

from __future__ import annotations

import importlib
from typing import Any

from sql_dl._version import __version__  # noqa: F401 - the package's version
from sql_dl.native_logs import quiet_tensorflow_import

quiet_tensorflow_import()

# public name -> the module that defines it
_EXPORTS = {
    "ConfigurationError": "sql_dl.errors",
    "FunctionArgumentError": "sql_dl.errors",
    "ImageDecodeError": "sql_dl.errors",
    "ManifestError": "sql_dl.errors",
    "ModelLoadError": "sql_dl.errors",
    "SparkInternalsError": "sql_dl.errors",
    "SqlDlError": "sql_dl.errors",
    "SqlDlWarning": "sql_dl.errors",
    "Manifest": "sql_dl.manifest",
    "load_manifest": "sql_dl.manifest",
    "bad_image_count": "sql_dl.driver.counts",
    "cached_image_count": "sql_dl.driver.counts",
    "scored_image_count": "sql_dl.driver.counts",
    "skipped_file_count": "sql_dl.driver.counts",
    "bootstrap": "sql_dl.driver.registration",
    "publish": "sql_dl.driver.publish",
    "session": "sql_dl.driver.session",
    "load_ipython_extension": "sql_dl.notebook",
    "show": "sql_dl.notebook",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sql_dl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
