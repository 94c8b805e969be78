"""Image decoding and preprocessing, exactly as Keras does it.

Decoding and resizing match ``keras.utils.load_img(f, color_mode="rgb", target_size=(H, W),
interpolation=...)`` followed by ``img_to_array``; the caffe, tf and torch modes are
``keras.applications.imagenet_utils.preprocess_input``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import re
from typing import Any, Callable

import numpy as np
from PIL import Image

from sql_dl.executor.batches import stack_valid
from sql_dl.executor.path_policy import current_policy
from sql_dl.errors import ImageDecodeError
from sql_dl.manifest import PreprocessorSpec, is_local, local_path
from sql_dl.rules import MAX_PIXELS, THUMBNAIL_SIZE

__all__ = ["decode_error", "describe_source", "image_info", "preprocess_batch", "read_uri",
           "thumbnail_url", "to_pil"]

# Spark's image struct (spark.read.format("image")) stores pixels as OpenCV does: BGR(A).
_STRUCT_FIELDS = ("height", "width", "nChannels", "data")
_RESAMPLING = {name.lower(): value for name, value in Image.Resampling.__members__.items()}
_OBJECT_REPR = re.compile(r" ?<[\w.]+ object at 0x[0-9a-fA-F]+>")


def describe_source(value: Any) -> str:
    """Names an image for the end of an error message: ``path='...'``, or its size and
    content hash with the SQL that finds it."""
    if isinstance(value, str):
        return f"path={value!r}"
    if isinstance(value, dict) and value.get("origin"):
        return f"path={value['origin']!r}"
    data = bytes(value["data"]) if isinstance(value, dict) else bytes(value)
    digest = hashlib.sha256(data).hexdigest()[:16]
    return (f"image of {len(data)} bytes with SHA-256 {digest}..., found by "
            f"sha2(image, 256) LIKE '{digest}%'")


def error_text(error: Exception) -> str:
    """``Type: message`` of a decoding error, without the object addresses Pillow puts in."""
    return f"{type(error).__name__}: {_OBJECT_REPR.sub('', str(error)).rstrip('.')}"


def read_uri(uri: str) -> bytes:
    """Reads a file given by a local path, a ``file:`` URI or any URI pyarrow.fs knows; in
    ``sql-dl serve``, only as its path policy allows (`sql_dl.executor.path_policy`)."""
    policy = current_policy()
    if policy is not None:
        return policy.read(uri)
    if is_local(uri):
        with open(local_path(uri), "rb") as f:
            return f.read()
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(path) as f:
        return f.read()


def to_pil(value: Any, max_pixels: int = MAX_PIXELS):
    """Opens an encoded image (bytes), a path/URI (str) or a Spark image struct (dict) with PIL.

    Only the header is read here; an image of more than ``max_pixels`` pixels is refused
    before any pixel is decoded.
    """
    image = _open(value)
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} = {pixels} pixels is over the limit of {max_pixels} "
            "(the preprocessor's max_pixels)")
    return image


def _open(value: Any):
    """An encoded image, a path/URI or an image struct opened with PIL (header only)."""
    if isinstance(value, str):
        value = read_uri(value)
    if isinstance(value, dict):
        return _struct_to_pil(value)
    return Image.open(io.BytesIO(value))


def _struct_to_pil(row: dict):
    height, width, channels, data = (row[k] for k in _STRUCT_FIELDS)
    pixels = np.frombuffer(bytes(data), dtype=np.uint8).reshape(height, width, channels)
    if channels == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[..., 0]))
    if channels == 3:
        return Image.fromarray(np.ascontiguousarray(pixels[..., ::-1]))
    if channels == 4:
        return Image.fromarray(np.ascontiguousarray(pixels[..., [2, 1, 0, 3]]))
    raise ValueError(f"unsupported number of channels in image struct: {channels}")


def decode_error(value: Any, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why the image cannot be decoded (as load_img would), or None if it can; NULL input
    gives None."""
    if value is None:
        return None
    try:
        to_pil(value, max_pixels).convert("RGB")
    except Exception as e:  # PIL raises many types on hostile input
        return error_text(e)
    return None


def image_info(value: Any) -> dict[str, Any] | None:
    """``format``, ``mode``, ``width``, ``height`` and ``frames`` of an image, from its header
    (no pixel is decoded; an image struct has no format). None for NULL, or for what Pillow
    cannot identify or refuses from its header alone."""
    if value is None:
        return None
    try:
        image = _open(value)
        return {"format": image.format, "mode": image.mode, "width": image.width,
                "height": image.height, "frames": getattr(image, "n_frames", 1)}
    except Exception:  # noqa: BLE001 - Pillow raises many types on hostile input
        return None


def thumbnail_url(value: Any, size: int = THUMBNAIL_SIZE,
                  max_pixels: int = MAX_PIXELS) -> str | None:
    """A ``data:image/...;base64`` URL of the image (encoded bytes, a path/URI or an image
    struct), shrunk so that its longest side is at most ``size`` pixels, aspect ratio kept
    (never enlarged): JPEG, or PNG when the image has transparency.

    Decoded as Keras's ``load_img`` decodes: the first frame, EXIF orientation not applied.
    A JPEG is decoded at the smallest DCT scale still twice the thumbnail's size. None for
    NULL and for what cannot be decoded within ``max_pixels``."""
    if value is None:
        return None
    try:
        image = to_pil(value, max_pixels)
        _draft(image, size, size)
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        image = image.convert("RGBA" if alpha else "RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if alpha else "JPEG", quality=90, subsampling=0)
    except Exception:  # noqa: BLE001 - Pillow raises many types on hostile input
        return None
    kind = "png" if alpha else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _draft(image, width: int, height: int) -> None:
    """Makes a JPEG decode through its own DCT scaling, at the largest reduction (1/2, 1/4,
    1/8) that leaves every side at least twice ``width`` x ``height``; other formats are
    left as they are."""
    image.draft(None, (2 * width, 2 * height))


def load_rgb(value: Any, size: tuple[int, int], interpolation: str,
             max_pixels: int = MAX_PIXELS, decode: str = "exact") -> np.ndarray:
    """Decodes one image to an (H, W, 3) float32 RGB array, as load_img + img_to_array do
    (see `decode_rgb`)."""
    return np.asarray(decode_rgb(value, size, interpolation, max_pixels, decode),
                      dtype=np.float32)


def decode_rgb(value: Any, size: tuple[int, int], interpolation: str,
               max_pixels: int = MAX_PIXELS, decode: str = "exact"):
    """Decodes one image to an RGB PIL image of ``size`` (H, W), as load_img does.

    ``decode="draft"`` decodes a JPEG through its own DCT scaling, at the largest reduction
    (1/2, 1/4 or 1/8) that leaves every side at least twice the target size, before the same
    conversion and resize; other formats are decoded exactly. The pixel limit is checked on
    the header first either way."""
    image = to_pil(value, max_pixels)
    if decode == "draft":
        _draft(image, size[1], size[0])
    if image.mode != "RGB":
        image = image.convert("RGB")
    width_height = (size[1], size[0])
    if image.size != width_height:
        image = image.resize(width_height, _RESAMPLING[interpolation])
    return image


def resolve_function(reference: str) -> Callable[[np.ndarray], np.ndarray]:
    """Imports ``package.module:function`` (this runs the module's code)."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def apply_mode(batch: np.ndarray, mode: str) -> np.ndarray:
    """Applies a preprocessing mode to an (N, H, W, 3) float32 batch of 0..255 RGB pixels."""
    if mode == "none":
        return batch
    if mode == "scale":
        return batch / np.float32(255.0)
    from keras.applications.imagenet_utils import preprocess_input

    return preprocess_input(batch, data_format="channels_last", mode=mode)


def preprocess_batch(values: list[Any], spec: PreprocessorSpec, on_error: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Decodes and preprocesses images; undecodable ones are skipped or raise.

    Args:
        values: encoded images (bytes), paths (str) or image structs (dict); None allowed.
        spec: the preprocessor to apply.
        on_error: ``"null"`` to skip undecodable images, ``"fail"`` to raise.

    Returns:
        ``(tensors, ok)``: the float32 tensors of the decodable images, stacked, and a
        boolean mask over ``values`` saying which ones they are.

    Raises:
        ImageDecodeError: under ``on_error="fail"``, naming the image by path or content hash.
    """
    function = resolve_function(spec.function) if spec.function else None

    def decode(value: Any) -> np.ndarray | None:
        """The (H, W, 3) 8-bit RGB pixels (decoded here: PIL decodes when they are read)."""
        try:
            return np.asarray(decode_rgb(value, spec.size, spec.interpolation, spec.max_pixels,
                                         spec.decode))
        except Exception as e:  # PIL raises many types on hostile input
            if on_error == "fail":
                raise ImageDecodeError(
                    f"cannot decode the image: {error_text(e)}. Fix or remove the file, or set "
                    f"on_error: null to get NULL for it. Received: {describe_source(value)}") from e
            return None

    if function is not None:
        def convert(value: Any) -> np.ndarray | None:
            pixels = decode(value)
            return None if pixels is None else np.asarray(
                function(pixels.astype(np.float32)), dtype=np.float32)

        return stack_valid(values, convert, (*spec.size, 3))
    # the 8-bit pixels of the batch, made float32 at once: the values img_to_array gives
    batch = np.empty((len(values), *spec.size, 3), dtype=np.uint8)
    ok = np.zeros(len(values), dtype=bool)
    count = 0
    for i, value in enumerate(values):
        pixels = None if value is None else decode(value)
        if pixels is not None:
            batch[count] = pixels
            count += 1
            ok[i] = True
    decoded = batch[:count].astype(np.float32)
    return (apply_mode(decoded, spec.mode) if len(decoded) else decoded), ok
