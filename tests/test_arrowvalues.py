"""arrowvalues builds what pyarrow's own conversion builds, without asking pandas: each helper checked
against pyarrow on the values the list loaders and URL normalisation give it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from scanner import arrowvalues

TEXTS = [
    [],
    [""],
    ["http:", "https:", "http:80"],
    ["", "ä", "Straße", "\u202eevil", "日本語", "x" * 1000],
    ["a", None, "", None],
    [None],
]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()], ids=str)
@pytest.mark.parametrize("values", TEXTS, ids=range(len(TEXTS)))
def test_text_values_are_the_array_pyarrow_builds(values: list, kind: pa.DataType) -> None:
    built = arrowvalues.strings(values, kind)
    built.validate(full=True)
    assert built.equals(pa.array(values, kind))
    assert built.null_count == values.count(None)


def test_text_that_is_no_utf8_is_refused_as_pyarrow_refuses_it() -> None:
    for convert in (lambda v: pa.array(v, pa.string()), arrowvalues.strings):
        with pytest.raises(UnicodeEncodeError):
            convert(["ok", "lone \ud800 surrogate"])


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 64, 1001])
def test_masks_and_whole_numbers_are_the_arrays_pyarrow_builds(length: int) -> None:
    rng = np.random.default_rng(length)
    mask = rng.random(length) < 0.4
    numbers = rng.integers(-(2**40), 2**40, length)
    assert arrowvalues.booleans(mask).equals(pa.array(mask.tolist(), pa.bool_()))
    assert arrowvalues.integers(numbers).equals(pa.array(numbers.tolist(), pa.int64()))
    assert arrowvalues.integers(numbers.tolist()).equals(pa.array(numbers.tolist(), pa.int64()))


def test_scalars_are_the_scalars_pyarrow_builds() -> None:
    assert arrowvalues.text("://", pa.large_string()).equals(pa.scalar("://", pa.large_string()))
    assert arrowvalues.text("").equals(pa.scalar("", pa.string()))
    assert arrowvalues.integer(253).equals(pa.scalar(253, pa.int64()))
    assert arrowvalues.boolean(False).equals(pa.scalar(False))
    assert arrowvalues.boolean(True).equals(pa.scalar(True))
    null = arrowvalues.null(pa.large_string())
    assert null.type == pa.large_string() and not null.is_valid


NUMERIC = [
    pa.int8(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint32(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
]


@pytest.mark.parametrize("kind", [pa.bool_(), *NUMERIC], ids=str)
def test_arrays_to_numpy_as_pyarrow_converts_them_slices_and_chunks_too(kind: pa.DataType) -> None:
    rng = np.random.default_rng(7)
    values = (rng.random(77) < 0.5) if kind == pa.bool_() else rng.integers(0, 100, 77)
    whole = pa.array(values.tolist(), kind)
    chunked = pa.chunked_array([whole.slice(0, 10), whole.slice(10)])
    cases = [whole, whole.slice(3, 50), whole.slice(13, 0), whole.slice(77), chunked, chunked.slice(5, 20)]
    for array in cases:
        expected = array.to_numpy(zero_copy_only=False)
        got = arrowvalues.numpy(array)
        assert got.dtype == expected.dtype, array
        np.testing.assert_array_equal(got, expected)


def test_arrays_with_nulls_or_of_other_types_go_through_pyarrow() -> None:
    with_nulls = pa.array([1, None, 3], pa.int64())
    np.testing.assert_array_equal(arrowvalues.numpy(with_nulls), with_nulls.to_numpy(zero_copy_only=False))
    texts = pa.array(["a", "b"])
    assert arrowvalues.numpy(texts).tolist() == ["a", "b"]


def test_a_view_of_an_arrays_memory_cannot_be_written_through() -> None:
    numbers = pa.array([1, 2, 3], pa.int64())
    with pytest.raises(ValueError, match="read-only"):
        arrowvalues.numpy(numbers)[0] = 99
    assert numbers.to_pylist() == [1, 2, 3]


def test_text_from_a_generator_keeps_its_nulls_and_other_kinds_are_refused() -> None:
    assert arrowvalues.strings(v for v in ["a", None, "b"]).to_pylist() == ["a", None, "b"]
    with pytest.raises(TypeError, match="string or large_string"):
        arrowvalues.strings(["a"], pa.binary())


COLUMNS = [
    (pa.string(), ["a", None, "ü"]),
    (pa.int64(), [1, None, -(2**62)]),
    (pa.int32(), [200, None, -5]),
    (pa.timestamp("ms", tz="UTC"), [1_700_000_000_000, None, 0]),
    (pa.list_(pa.string(), 2), [["a", "b"], None, ["", "ü"]]),
    (pa.float64(), [1.5, None, 2.0]),  # another type: pyarrow's own conversion
    (pa.int64(), []),
]


@pytest.mark.parametrize(("kind", "values"), COLUMNS, ids=[str(kind) for kind, _ in COLUMNS])
def test_a_column_of_python_values_is_the_array_pyarrow_builds(kind: pa.DataType, values: list) -> None:
    built = arrowvalues.column(values, kind)
    built.validate(full=True)
    assert built.equals(pa.array(values, kind))


def test_a_column_refuses_what_pyarrow_refuses() -> None:
    for values, kind in (([2**31], pa.int32()), ([["a"]], pa.list_(pa.string(), 2)), (["x"], pa.int64())):
        with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError)):
            pa.array(values, kind)
        with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError)):
            arrowvalues.column(values, kind)


@pytest.mark.parametrize("kind", [pa.string(), pa.int32(), pa.timestamp("ms", tz="UTC")], ids=str)
def test_a_column_of_nulls_only_is_the_array_pyarrow_builds(kind: pa.DataType) -> None:
    assert arrowvalues.column([None, None], kind).equals(pa.array([None, None], kind))


class _AlwaysEqual:
    """Equal to everything (None too), an integer by __index__."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __index__(self) -> int:
        return 7


ODD_COLUMNS = [
    (pa.int64(), [True, None, 5]),  # a bool is no integer to pyarrow
    (pa.timestamp("ms", tz="UTC"), [True]),
    (pa.int64(), ["5", 1]),
    (pa.int32(), [b"7"]),
    (pa.string(), [b"abc", None]),
    (pa.string(), [5]),
    (pa.list_(pa.string(), 2), [{"a": 1, "b": 2}]),
    (pa.list_(pa.string(), 2), [[b"a", b"b"]]),
    (pa.list_(pa.string(), 2), [5]),
    (pa.list_(pa.string(), 0), [[], None]),
    (pa.int64(), [_AlwaysEqual(), _AlwaysEqual()]),
    (pa.int64(), [2**63]),
]


@pytest.mark.parametrize(("kind", "values"), ODD_COLUMNS, ids=range(len(ODD_COLUMNS)))
def test_values_of_other_types_get_what_pyarrow_gives_them(kind: pa.DataType, values: list) -> None:
    try:
        expected: object = pa.array(values, kind)
    except Exception as exc:  # the error is what is compared
        expected = type(exc)
    try:
        got: object = arrowvalues.column(values, kind)
    except Exception as exc:
        got = type(exc)
    if isinstance(expected, pa.Array):
        assert isinstance(got, pa.Array) and got.equals(expected)
    else:
        assert got == expected


def test_a_column_takes_any_iterable_once() -> None:
    assert arrowvalues.column((v for v in ["a", None]), pa.string()).to_pylist() == ["a", None]
    assert arrowvalues.column(np.array([1, 2]), pa.int32()).to_pylist() == [1, 2]
    assert arrowvalues.column((None, None), pa.int32()).null_count == 2
