"""The one definition of each manifest value's validity, shared by the manifest validator
and the Spark ML Params (sql_dl.ml), and of the names sql_dl itself takes in SQL. Each
``*_problem`` rule returns what is wrong, or None.

Pure Python, like the manifest: no Spark, no TensorFlow.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "APPLICATIONS", "BUILT_IN_FUNCTIONS", "CACHE_VIEW", "DECODE_MODES", "DEVICES_VIEW",
    "ENGINES", "IMAGE_ERROR_FUNCTION", "IMAGE_EXTENSIONS", "IMAGE_INFO_FUNCTION", "INDEXES_VIEW", "INDEX_METRICS", "INPUT_KINDS", "INTERPOLATIONS",
    "LABEL_SOURCES", "MAX_NEIGHBOURS", "MAX_PIXELS", "MODELS_VIEW", "ON_ERROR", "PATH_POLICY_ENV",
    "PILLOW_MAX_PIXELS", "PRECISIONS", "PREPROCESS_MODES", "RESERVED_NAMES", "SYSTEM_VIEWS",
    "THUMBNAIL_FUNCTION", "THUMBNAIL_MAX_SIZE", "VIEWS_VIEW", "THUMBNAIL_SIZE", "application_problem", "byte_size",
    "byte_size_problem", "choice_problem", "default_labels", "default_mode", "duration_problem",
    "duration_seconds", "extensions_problem", "max_pixels_problem", "positive_int_problem", "received",
    "sample_ratio_problem", "size_problem",
]

PREPROCESS_MODES = ("caffe", "tf", "torch", "scale", "none")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")
DECODE_MODES = ("exact", "draft")  # draft: JPEGs decoded at a reduced DCT scale
ENGINES = ("keras", "openvino")  # what runs a model's batches (sql_dl.executor.engines)
PRECISIONS = ("float32", "bfloat16")  # bfloat16: OpenVINO only
INPUT_KINDS = ("image", "tensor")
LABEL_SOURCES = ("parent_dir", "none")
# The file name extensions an image view lists by default (compared in any case).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff")
ON_ERROR = ("null", "fail")
# The environment variable through which sql-dl serve gives its Python workers the image
# folders sql_dl's functions may read paths under (sql_dl.executor.path_policy).
PATH_POLICY_ENV = "SQL_DL_PATH_POLICY"
# Pillow's own default limit; images over it are refused before their pixels are decoded.
MAX_PIXELS = 89_478_485
# Pillow refuses images over twice its limit whatever sql_dl allows.
PILLOW_MAX_PIXELS = 2 * MAX_PIXELS
# The functions every manifest registers.
IMAGE_ERROR_FUNCTION = "sql_dl_image_error"
THUMBNAIL_FUNCTION = "sql_dl_thumbnail"
IMAGE_INFO_FUNCTION = "sql_dl_image_info"
BUILT_IN_FUNCTIONS = (IMAGE_ERROR_FUNCTION, THUMBNAIL_FUNCTION, IMAGE_INFO_FUNCTION)
# The system views bootstrap creates beside the manifest's image views.
MODELS_VIEW = "sql_dl_models"  # the registered functions
CACHE_VIEW = "sql_dl_cache"  # the prediction cache of each executor machine
DEVICES_VIEW = "sql_dl_devices"  # the models each Python worker holds, per device
VIEWS_VIEW = "sql_dl_views"  # each image view's catalog: files, folders, last refresh, state
INDEXES_VIEW = "sql_dl_indexes"  # each embedding index: size, state, last update
SYSTEM_VIEWS = (MODELS_VIEW, CACHE_VIEW, DEVICES_VIEW, VIEWS_VIEW, INDEXES_VIEW)
# An index's distance (the ``indexes:`` section's ``metric``), as Spark's vector functions
# give it: 1 - vector_cosine_similarity, vector_l2_distance, -vector_inner_product.
INDEX_METRICS = ("cosine", "l2", "inner")
MAX_NEIGHBOURS = 1000  # the largest k of an index's table function
# No manifest entry may take these names (lower case: Spark's names are case-insensitive).
RESERVED_NAMES = SYSTEM_VIEWS + BUILT_IN_FUNCTIONS
THUMBNAIL_SIZE = 128  # pixels on a thumbnail's longest side, by default
THUMBNAIL_MAX_SIZE = 1024

# keras.applications image classifiers and the preprocessing their preprocess_input applies
# ("none": the model rescales 0..255 input itself).
APPLICATIONS: dict[str, str] = {
    **dict.fromkeys(["Xception", "InceptionV3", "InceptionResNetV2", "MobileNet",
                     "MobileNetV2", "NASNetMobile", "NASNetLarge",
                     "ResNet50V2", "ResNet101V2", "ResNet152V2"], "tf"),
    **dict.fromkeys(["VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152"], "caffe"),
    **dict.fromkeys(["DenseNet121", "DenseNet169", "DenseNet201"], "torch"),
    **dict.fromkeys(
        ["MobileNetV3Small", "MobileNetV3Large"]
        + [f"EfficientNetB{i}" for i in range(8)]
        + [f"EfficientNetV2{v}" for v in ("B0", "B1", "B2", "B3", "S", "M", "L")]
        + [f"ConvNeXt{v}" for v in ("Tiny", "Small", "Base", "Large", "XLarge")],
        "none",
    ),
}


def size_problem(value: Any) -> str | None:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value)):
        return "must be [height, width], two positive integers"
    return None


def choice_problem(value: Any, allowed: tuple[str, ...]) -> str | None:
    return None if value in allowed else f"must be one of {', '.join(allowed)}"


def positive_int_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "must be a positive integer"
    return None


def max_pixels_problem(value: Any) -> str | None:
    problem = positive_int_problem(value)
    if problem is None and value > PILLOW_MAX_PIXELS:
        return f"must be at most {PILLOW_MAX_PIXELS}, the most Pillow decodes"
    return problem


def sample_ratio_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        return "must be a number in (0, 1]"
    return None


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def duration_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
            isinstance(value, str) and not _DURATION.match(value)) or (
            not isinstance(value, str) and value < 0):
        return "must be a duration such as 0, 30s, 10m, 2h or 1d (seconds when no unit)"
    return None


def duration_seconds(value: int | float | str) -> float:
    """``10m`` -> 600.0; a number is seconds. The value must have passed `duration_problem`."""
    if not isinstance(value, str):
        return float(value)
    number, unit = _DURATION.match(value).groups()
    return float(number) * _DURATION_UNITS[unit or "s"]


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*$", re.IGNORECASE)


def byte_size_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, str) and not _SIZE.match(value)) or (
            isinstance(value, int) and value <= 0) or byte_size(value) < 1 << 16:
        return "must be a size of at least 64KB, such as 500MB or 2GB (bytes when no unit)"
    return None


def byte_size(value: int | str) -> int:
    """``2GB`` -> 2147483648 (units of 1,024); a number is bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if match is None:
        return 0
    number, unit = match.groups()
    unit = unit.upper()
    return int(float(number) * _SIZE_UNITS[unit if unit.endswith("B") or not unit else unit + "B"])


def application_problem(value: Any) -> str | None:
    if value not in APPLICATIONS:
        return f"must be a keras.applications image classifier (known: {', '.join(APPLICATIONS)})"
    return None


def default_mode(application: str | None) -> str:
    """The preprocessing mode when none is given: the application's own, else none."""
    return APPLICATIONS[application] if application else "none"


def default_labels(application: str | None, weights: str | None) -> str | None:
    """The labels when none are given: ImageNet's for an application with ImageNet weights."""
    return "imagenet" if application is not None and weights == "imagenet" else None


def received(key: str, value: Any) -> str:
    """The end of every sql_dl error message: ``Received: key=value``."""
    return f"Received: {key}={value!r}"


def extensions_problem(value: Any) -> str | None:
    """``images.<view>.extensions``: a list of file name extensions, or ``all``."""
    if value == "all":
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(e, str) and re.fullmatch(r"[A-Za-z0-9]+", e) for e in value)):
        return ("must be a list of file name extensions without the dot, such as [jpg, png], "
                "or all (every file)")
    return None
