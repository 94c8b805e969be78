"""``register_keras_image_udf``: sparkdl's call to deploy a Keras model as a SQL function."""

from __future__ import annotations

import os
import uuid
from typing import Any, Mapping

from sql_dl.driver.registration import bootstrap
from sql_dl.spark.backends import backend_for

__all__ = ["register_keras_image_udf", "registerKerasImageUDF"]


def register_keras_image_udf(spark, name: str, model_or_file: Any,
                             preprocessor: Mapping[str, Any] | None = None) -> None:
    """Registers ``name(image)``, ``name_features(image)`` and ``name_top_k(image, k)``, and
    ``name_preprocessor(image)`` when ``preprocessor`` is given.

    It goes through the same machinery as a manifest entry, adding to what is registered.

    Args:
        spark: the SparkSession.
        name: the SQL function name (a SQL identifier).
        model_or_file: a Keras model, or the path of a .keras/.h5 file or SavedModel directory.
        preprocessor: a manifest preprocessor entry, e.g. ``{"size": [299, 299], "mode": "tf"}``;
            default: the model's input size and ``mode: none`` (0..255 pixels).

    Raises:
        ManifestError: ``name`` or ``preprocessor`` is invalid.
        ModelLoadError: the model cannot be loaded or does not fit the preprocessor.
    """
    if isinstance(model_or_file, (str, os.PathLike)):
        path = os.fspath(model_or_file)
    else:
        path = str(backend_for(spark).staging / f"{name}-{uuid.uuid4().hex[:8]}.keras")
        model_or_file.save(path)
    entry: dict[str, Any] = {"path": path}
    manifest: dict[str, Any] = {"models": {name: entry}}
    if preprocessor is not None:
        entry["preprocessor"] = f"{name}_preprocessor"
        manifest["preprocessors"] = {entry["preprocessor"]: dict(preprocessor)}
    bootstrap(spark, manifest, replace=False)


registerKerasImageUDF = register_keras_image_udf
