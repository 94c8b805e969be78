"""Arrow batches to numpy and back: input values, stacked tensors with their ok-mask, and
``array<float>`` output columns built as one buffer per chunk."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["chunks", "column_values", "float_rows", "stack_valid"]


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``values`` in consecutive slices of at most ``size``."""
    return (values[start:start + size] for start in range(0, len(values), size))


def column_values(batch: pa.Array) -> list[Any]:
    """One Arrow batch as Python values: bytes, str, image-struct dicts or float32 arrays;
    None for NULL (and for an image struct without data)."""
    if pa.types.is_struct(batch.type):
        return [None if row is None or row.get("data") is None else row
                for row in batch.to_pylist()]
    if pa.types.is_list(batch.type) or pa.types.is_large_list(batch.type):
        return _tensor_rows(batch)
    return batch.to_pylist()


def _tensor_rows(batch: pa.Array) -> list[np.ndarray | None]:
    """Rows of a (nested) list array as flat float32 arrays, copied once per batch."""
    rows = np.arange(len(batch))
    values = batch
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        rows = rows[pc.list_parent_indices(values).to_numpy()]
        values = pc.list_flatten(values)
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    ends = np.cumsum(np.bincount(rows, minlength=len(batch)))
    nulls = batch.is_null().to_numpy(zero_copy_only=False)
    return [None if null else piece for null, piece in zip(nulls, np.split(flat, ends[:-1]))]


def stack_valid(values: Sequence[Any], convert: Callable[[Any], np.ndarray | None],
                shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Converts each non-None value; returns the stacked float32 results and the mask of the
    values they come from. ``convert`` returns None for a value it skips; ``shape`` is one
    result's shape, for an empty batch."""
    arrays, ok = [], np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values):
        array = None if value is None else convert(value)
        if array is not None:
            arrays.append(array)
            ok[i] = True
    if not arrays:
        return np.zeros((0, *shape), dtype=np.float32), ok
    return np.stack(arrays).astype(np.float32, copy=False), ok


def float_rows(results: np.ndarray, ok: np.ndarray) -> pa.Array:
    """An array<float> column: one row of ``results`` per row where ``ok``, NULL elsewhere."""
    values = np.ascontiguousarray(results, dtype=np.float32).reshape(-1)
    width = values.size // max(1, len(results))
    offsets = np.zeros(len(ok) + 1, dtype=np.int32)
    np.cumsum(ok * width, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values),
                                    mask=pa.array(~ok) if not ok.all() else None)
