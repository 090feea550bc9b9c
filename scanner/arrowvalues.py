"""Arrow arrays and scalars of plain Python and numpy values, built from their buffers.

pyarrow's own conversion (pa.array, pa.scalar, a Python value given to a compute function) first asks
whether the value is a pandas object, and that question imports pandas wherever it is installed: 0.2-0.3 s
of CPU and tens of MB in every process that converts a value. The scanner has no pandas object to convert,
and the processes on the way to a scan's first request (the coordinator loading URL lists, the unit workers)
build their arrays here instead, so that a machine with pandas installed starts as fast as one without.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

STRING = pa.string()
LARGE_STRING = pa.large_string()


def strings(values: Iterable[str | None], kind: pa.DataType = STRING) -> pa.Array:
    """Text values (None: null) as an array of `kind`: string or large_string. A value that is no valid
    UTF-8 text (a lone surrogate) raises UnicodeEncodeError, as pyarrow's own conversion does; more than
    2 GiB of text in a string array raises ArrowInvalid (where pyarrow's would have split it in chunks)."""
    if kind not in (STRING, LARGE_STRING):
        raise TypeError(f"strings() builds string or large_string arrays, not {kind}")
    values = values if isinstance(values, list) else list(values)
    has_nulls = None in values
    data = [b"" if v is None else v.encode() for v in values] if has_nulls else [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, data), np.int64, len(data)), out=offsets[1:])
    validity, nulls = _validity(values) if has_nulls else (None, 0)
    text = pa.py_buffer(b"".join(data))
    if kind == STRING and offsets[-1] <= np.iinfo(np.int32).max:
        return pa.StringArray.from_buffers(
            len(data), pa.py_buffer(offsets.astype(np.int32)), text, validity, nulls
        )
    built = pa.LargeStringArray.from_buffers(len(data), pa.py_buffer(offsets), text, validity, nulls)
    return built if kind == LARGE_STRING else built.cast(STRING)  # raises: past what int32 offsets hold


def _validity(values: Sequence[object]) -> tuple[pa.Buffer | None, int]:
    """The validity bitmap of values whose None is null (None where none is), and how many are."""
    missing = np.fromiter((value is None for value in values), bool, len(values))
    nulls = int(missing.sum())
    return (pa.py_buffer(np.packbits(~missing, bitorder="little")) if nulls else None), nulls


def booleans(mask: np.ndarray) -> pa.BooleanArray:
    """A numpy truth mask as a boolean array."""
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def integers(values: np.ndarray | Sequence[int]) -> pa.Int64Array:
    """Whole numbers as an int64 array."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def column(values: Iterable[object], kind: pa.DataType) -> pa.Array:
    """Python values (None: null) as an array of `kind`: text, whole numbers of a signed integer type or
    of a timestamp's unit, fixed-size lists of text. Any other value or type goes through pyarrow's own
    conversion, with its result or its error (a bool or a str where an integer is wanted is refused)."""
    values = values if isinstance(values, (list, tuple)) else list(values)
    if values and all(map(operator.is_, values, itertools.repeat(None))):  # no row filled it (reason, member)
        return pa.nulls(len(values), kind)
    present = set(map(type, values)) - {type(None)}
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if all(issubclass(found, str) for found in present):  # a StrEnum too
            return strings(values, kind)  # type: ignore[arg-type]
    elif pa.types.is_fixed_size_list(kind) and kind.value_type in (STRING, LARGE_STRING) and kind.list_size:
        if present <= {list, tuple}:
            return _text_lists(values, kind)  # type: ignore[arg-type]
    elif (pa.types.is_signed_integer(kind) or pa.types.is_timestamp(kind)) and present <= {int}:
        return _integers_of(values, kind)  # type: ignore[arg-type]
    return pa.array(values, kind)


def _integers_of(values: Sequence[int | None], kind: pa.DataType) -> pa.Array:
    try:
        data = np.fromiter((0 if value is None else value for value in values), np.int64, len(values))
    except OverflowError:  # past int64: pyarrow's error
        return pa.array(values, kind)
    validity, nulls = _validity(values)
    built = pa.Array.from_buffers(pa.int64(), len(values), [validity, pa.py_buffer(data)], nulls)
    return built.cast(kind) if kind != pa.int64() else built  # the cast checks the range


@functools.cache
def text(value: str, kind: pa.DataType = STRING) -> pa.Scalar:
    """One text value as a scalar of `kind`."""
    return strings([value], kind)[0]


@functools.cache
def integer(value: int) -> pa.Scalar:
    """One whole number as an int64 scalar."""
    return integers([value])[0]


@functools.cache
def boolean(value: bool) -> pa.Scalar:
    """One truth value as a boolean scalar."""
    return booleans(np.array([value]))[0]


@functools.cache
def null(kind: pa.DataType) -> pa.Scalar:
    """The null scalar of a type."""
    return pa.nulls(1, kind)[0]


_NUMPY_TYPES = {
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint8(): np.uint8,
    pa.uint16(): np.uint16,
    pa.uint32(): np.uint32,
    pa.uint64(): np.uint64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean or numeric array with no nulls as a numpy array (read-only where it is a view); any other,
    through pyarrow's own conversion (Array.to_numpy: nulls as NaN or None)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    if array.null_count or not (pa.types.is_boolean(kind) or kind in _NUMPY_TYPES):
        return array.to_numpy(zero_copy_only=False)
    data = array.buffers()[1]
    if data is None:  # an empty array
        return np.zeros(0, bool if pa.types.is_boolean(kind) else _NUMPY_TYPES[kind])
    if pa.types.is_boolean(kind):
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return bits[array.offset : array.offset + len(array)].astype(bool)
    dtype = np.dtype(_NUMPY_TYPES[kind])
    view = np.frombuffer(data, dtype, count=len(array), offset=array.offset * dtype.itemsize)
    view.flags.writeable = False  # the array's own memory, as Array.to_numpy gives it
    return view


def _text_lists(values: Sequence[object], kind: pa.FixedSizeListType) -> pa.Array:
    """Lists of `kind.list_size` texts each (None: a null list)."""
    size = kind.list_size
    if any(value is not None and len(value) != size for value in values):  # type: ignore[arg-type]
        return pa.array(values, kind)  # and its error
    flat = [item for value in values for item in (value if value is not None else [None] * size)]  # type: ignore[union-attr]
    if not all(item is None or isinstance(item, str) for item in flat):
        return pa.array(values, kind)  # bytes to decode, or its error
    missing = np.fromiter((value is None for value in values), bool, len(values))
    mask = booleans(missing) if missing.any() else None
    return pa.FixedSizeListArray.from_arrays(strings(flat, kind.value_type), type=kind, mask=mask)
