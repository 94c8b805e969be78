"""sql_dl: deep-learning models over image collections as Spark SQL functions.

``bootstrap(spark, "conf/models.yaml")`` registers a manifest's models, preprocessors and
image folders in a Spark session; ``session(...)`` builds a configured session and does it.

Importing sql_dl (as its Python workers do) keeps TensorFlow's two absl start-up lines off
stderr when TensorFlow is imported later (see `sql_dl.native_logs`).
"""

from __future__ import annotations

from sql_dl.native_logs import quiet_tensorflow_import

quiet_tensorflow_import()

from sql_dl.counts import (bad_image_count, cached_image_count, scored_image_count,
                           skipped_file_count)
from sql_dl.errors import ImageDecodeError, ManifestError, ModelLoadError, SqlDlError
from sql_dl.manifest import Manifest, load_manifest
from sql_dl.notebook import load_ipython_extension, show
from sql_dl.publish import publish
from sql_dl.registration import bootstrap
from sql_dl.session import session

__version__ = "0.1.0"

__all__ = [
    "ImageDecodeError",
    "Manifest",
    "ManifestError",
    "ModelLoadError",
    "SqlDlError",
    "__version__",
    "bad_image_count",
    "bootstrap",
    "cached_image_count",
    "load_ipython_extension",
    "load_manifest",
    "publish",
    "scored_image_count",
    "session",
    "show",
    "skipped_file_count",
]
