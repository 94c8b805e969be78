"""What ``DESCRIBE FUNCTION [EXTENDED]``, ``SHOW FUNCTIONS`` and JDBC ``getFunctions`` say
about each function a manifest registers: usage with SQL types, the model's source,
preprocessing, output size and labels, the manifest's ``description``, and an example."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sql_dl.executor import udfs
from sql_dl.manifest import Manifest, PreprocessorSpec
from sql_dl.plans import ModelPlan
from sql_dl.rules import (IMAGE_ERROR_FUNCTION, IMAGE_INFO_FUNCTION, THUMBNAIL_FUNCTION,
                          THUMBNAIL_MAX_SIZE, THUMBNAIL_SIZE)

__all__ = ["FunctionDoc", "function_docs"]

IMAGE_ARGUMENT = ("image - the image: BINARY (encoded bytes: JPEG, PNG, ...), STRING (a path "
                  "or URI) or an image STRUCT (read_images' image column)")
_LABELS_SHOWN = 5


@dataclass(frozen=True)
class FunctionDoc:
    """One function's text: ``usage`` (one paragraph), ``arguments`` and ``examples``."""

    source: str  # the Python function that builds the UDF, shown as its class
    usage: str
    arguments: tuple[str, ...]
    examples: tuple[str, ...]
    # what the extension checks each call against as Spark analyses it (`CheckedArguments`):
    # comma-separated name:kind, name? when optional; kinds image, tensor, any, int:MIN:MAX
    parameters: str = "image:image"

    def extended(self) -> tuple[str, str]:
        """``arguments`` and ``examples`` in the layout Spark's ExpressionInfo requires."""
        arguments = "".join(f"      * {a}\n" for a in self.arguments)
        examples = "".join(f"      > {e}\n" for e in self.examples)
        return f"\n    Arguments:\n{arguments}  ", f"\n    Examples:\n{examples}  "


def _source(factory) -> str:
    """The UDF factory's dotted name, which DESCRIBE FUNCTION EXTENDED shows as its class."""
    return f"{factory.__module__}.{factory.__name__}"


def _preprocessing(spec: PreprocessorSpec | None) -> str:
    if spec is None:
        return "none (tensor input)"
    how = spec.function or f"mode {spec.mode}"
    if spec.decode == "draft":
        how += ", JPEGs decoded at a reduced scale (draft)"
    return (f"{spec.name} ({spec.size[0]}x{spec.size[1]} {spec.interpolation}, {how})"
            if spec.size else f"{spec.name} ({how})")


def _labels(plan: ModelPlan) -> str:
    if not plan.labels:
        return "none (top_k gives class indices)"
    shown = ", ".join(label for _, label in plan.labels[:_LABELS_SHOWN])
    more = ", ..." if len(plan.labels) > _LABELS_SHOWN else ""
    return f"{len(plan.labels)} ({shown}{more})"


def _described(text: str, description: str | None) -> str:
    return f"{text} {description}" if description else text


def _image_docs(view: str) -> dict[str, FunctionDoc]:
    """The functions every manifest registers, whatever it lists."""
    error, thumbnail, info = IMAGE_ERROR_FUNCTION, THUMBNAIL_FUNCTION, IMAGE_INFO_FUNCTION
    return {
        error: FunctionDoc(
            _source(udfs.image_error_udf),
            f"{error}(image) - Why an image cannot be decoded, as STRING 'Type: message', or "
            "NULL when it decodes.",
            (IMAGE_ARGUMENT,),
            (f"SELECT path, {error}(image) FROM {view} WHERE {error}(image) IS NOT NULL;",)),
        thumbnail: FunctionDoc(
            _source(udfs.thumbnail_udf),
            f"{thumbnail}(image[, size]) - The image shrunk so that its longest side is at "
            "most size pixels, aspect ratio kept, as a STRING data URL "
            "('data:image/jpeg;base64,...', PNG when it has transparency) that notebooks and "
            "BI tools display; decoded as Keras's load_img decodes (first frame, EXIF "
            "orientation not applied); NULL when it cannot be decoded.",
            (IMAGE_ARGUMENT, f"size - INT from 1 to {THUMBNAIL_MAX_SIZE}, pixels on the "
                             f"longest side (default {THUMBNAIL_SIZE})"),
            (f"SELECT path, {thumbnail}(image) FROM {view} LIMIT 5;",
             f"SELECT '<img src=\"' || {thumbnail}(image, 64) || '\">' AS html FROM {view};"),
            f"image:image,size?:int:1:{THUMBNAIL_MAX_SIZE}"),
        info: FunctionDoc(
            _source(udfs.image_info_udf),
            f"{info}(image) - The image's header as STRUCT<format: STRING, mode: STRING, "
            "width: INT, height: INT, frames: INT> (format and mode as Pillow names them, "
            "such as JPEG and RGB; format NULL for an image struct), read without decoding "
            "any pixel; NULL when the header cannot be read.",
            (IMAGE_ARGUMENT,),
            (f"SELECT {info}(image).format, count(*) FROM {view} GROUP BY 1;",
             f"SELECT path FROM {view} WHERE {info}(image).width < 224;"))}


def function_docs(manifest: Manifest, plans: list[ModelPlan]) -> dict[str, FunctionDoc]:
    """The text of every function the manifest registers, by SQL name."""
    view = next(iter(manifest.images), "images")
    docs = _image_docs(view)
    for spec in manifest.preprocessors.values():
        size = spec.size[0] * spec.size[1] * 3
        docs[spec.name] = FunctionDoc(
            _source(udfs.preprocessor_udf),
            _described(f"{spec.name}(image) - The image as a model receives it, preprocessed by "
                       f"{_preprocessing(spec)}: ARRAY<FLOAT> of {size} values (height x width "
                       "x RGB), NULL for an image that does not decode.", spec.description),
            (IMAGE_ARGUMENT,), (f"SELECT path, size({spec.name}(image)) FROM {view} LIMIT 5;",))
    for plan in plans:
        entry = manifest.models[plan.name]
        name, features, top_k = entry.function_names
        argument = (IMAGE_ARGUMENT if plan.input == "image" else
                    f"x - ARRAY<FLOAT> of {math.prod(plan.input_shape)} values, the model's "
                    f"input of shape {list(plan.input_shape)} flattened")
        x = "image" if plan.input == "image" else "x"
        parameter = ("image:image" if plan.input == "image" else
                     "x:any" if plan.loader is not None else "x:tensor")
        table = view if plan.input == "image" else "t"  # t: any table with an x column
        about = (f"model {plan.name} ({plan.source}; preprocessing "
                 f"{_preprocessing(plan.preprocessor)}; labels {_labels(plan)})")
        null = ("NULL for an image that does not decode" if plan.input == "image"
                else "NULL for a NULL input")
        for function_name, what in (
                (name, f"The {plan.output_size} outputs of {about} as ARRAY<FLOAT>"),
                (features, f"The {plan.features_size} values of layer '{plan.features_layer}' "
                           f"of {about} as ARRAY<FLOAT> (features for clustering or a new "
                           "classifier)")):
            docs[function_name] = FunctionDoc(
                _source(udfs.model_udf),
                _described(f"{function_name}({x}) - {what}, {null}.", entry.description),
                (argument,), (f"SELECT {function_name}({x}) FROM {table} LIMIT 5;",), parameter)
        docs[top_k] = FunctionDoc(
            _source(udfs.top_k_udf),
            _described(f"{top_k}({x}, k) - The k most probable of the {plan.output_size} "
                       f"classes of {about}, most probable first, as ARRAY<STRUCT<class: "
                       "STRING, description: STRING, probability: FLOAT>>; k = 0 gives an "
                       f"empty array, {null}.", entry.description),
            (argument, "k - INT, at least 0"),
            (f"SELECT {top_k}({x}, 3) FROM {table} LIMIT 5;",
             f"SELECT {top_k}({x}, 1)[0].description AS class, count(*) FROM {table} "
             "GROUP BY 1;"), f"{parameter},k:int:0:")
    return docs
