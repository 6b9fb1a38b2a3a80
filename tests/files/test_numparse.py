"""api/files/numparse.py: the one-pass block parser gives bit for bit the general path's array (fastjson's,
cast to the input's dtype) or None, never anything else; and only the files job ever imports numba."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.files import numparse
from api.files.columns import Layout
from api.model.signature import TensorInfo
from api.protocols import fastjson

pytest.importorskip("numba")

SHAPE = (8, 8, 1)  # digits


def general(text: bytes, dtype) -> np.ndarray | None:
    array = fastjson.numeric_array(text)
    with np.errstate(over="ignore"):  # as api/protocols/codecs.cast casts (it then refuses the infinity)
        return None if array is None else array.astype(dtype)


def block(rows: list[list]) -> bytes:
    """Rows of flat numbers' texts as JSON Lines joined as the reader joins them, shaped SHAPE."""
    lines = []
    for row in rows:
        nested = ",".join("[" + ",".join(f"[{v}]" for v in row[r * 8:(r + 1) * 8]) + "]" for r in range(8))
        lines.append(("[" + nested + "]\n").encode())
    return b"[" + b",".join(lines) + b"]"


def same(text: bytes, rows: int, shape=SHAPE, dtype=np.float32) -> np.ndarray:
    """Asserts the parser takes the block and gives the general path's very bits; returns the array."""
    expected = general(text, dtype)
    got = numparse.parse_rows(text, rows, shape, dtype)
    assert expected is not None and got is not None, text[:200]
    assert got.dtype == np.dtype(dtype) and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes(), text[:200]
    return got


def refused(text: bytes, rows: int = 1, shape=SHAPE, dtype=np.float32) -> None:
    assert numparse.parse_rows(text, rows, shape, dtype) is None, text[:200]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_floats_printed_by_repr(dtype):
    rng = np.random.default_rng(7)
    for scale in (1.0, 1e-3, 1e3, 1e-7, 1e6):
        values = (rng.standard_normal((64, 64)) * scale).astype(np.float32)
        # float32's own shortest repr (str(np.float32), as numpy prints it): 9 digits at most, always taken
        same(block([[str(v) for v in row] for row in values]), 64, dtype=dtype)
        same(block([[np.format_float_positional(v, trim="0") for v in row] for row in values]), 64, dtype=dtype)
        same(block([[np.format_float_scientific(v, trim="0") for v in row] for row in values]), 64, dtype=dtype)
        # as doubles (repr(float)): 17 digits mostly, so a block falls back; row by row, taken or refused,
        # never another value
        for row in values:
            text = block([[repr(float(v)) for v in row]])
            got = numparse.parse_rows(text, 1, SHAPE, dtype)
            assert got is None or got.tobytes() == general(text, dtype).tobytes()
        for row in values[:8]:
            taken = [v for v in row if len(repr(float(v)).lstrip("-0.").replace(".", "").split("e")[0]) <= 15]
            if len(taken) >= 64:
                same(block([[repr(float(v)) for v in taken[:64]]]), 1, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_digits_rows_with_four_decimals(dtype):
    rng = np.random.default_rng(3)
    values = np.round(rng.integers(0, 17, (512, 64)) / 16, 4)
    got = same(block([[repr(float(v)) for v in row] for row in values]), 512, dtype=dtype)
    assert got.shape == (512, *SHAPE)


def test_every_decimal_of_up_to_four_digits():
    # Exhaustive on the path the digits rows take: 0.0000 .. 9.9999, each rounded once to float32.
    values = [f"{i // 10000}.{i % 10000:04d}" for i in range(100_000)]
    rows = [values[i:i + 64] for i in range(0, len(values) - 63, 64)]
    same(block(rows), len(rows))


def test_integers_exponents_and_zeros():
    numbers = ["0", "-0", "7", "-7", "16", "9007199254740991", "-9007199254740991", "123456789012345",
               "0.0", "-0.0", "-0e0", "0e-999", "-0.000e5", "1e0", "1E0", "1e+0", "1e-0", "1.5e22", "-1.5E-21",
               "12345e-22", "9007199254740991e22", "9007199254740991e-22", "0.000001", "2.5", "10e22",
               "1e22", "1e-22", "4.9", "0.1", "0.2", "0.3000000000000000", "16777217", "16777219",
               "33554435", "0.1e1", "10.25e-3", "1e-00000000000000000000000000000000000007"]
    numbers = (numbers * 2)[:64]
    same(block([numbers]), 1)
    same(block([numbers]), 1, dtype=np.float64)
    # a block of integers only: the general path makes int64 of it, then casts
    same(block([[str(v) for v in range(-32, 32)], [str(2 ** 53 - 1 - v) for v in range(64)]]), 2)


def test_negative_zero_keeps_the_general_paths_sign():
    ints = same(block([["-0"] * 64]), 1)
    assert not np.signbit(ints).any()  # an integer -0 is the integer 0
    floats = same(block([["-0.0"] * 32 + ["-0"] * 32]), 1)
    assert np.signbit(floats.reshape(-1)[:32]).all() and not np.signbit(floats.reshape(-1)[32:]).any()
    assert np.signbit(same(block([["-0e0"] * 64]), 1)).all()


def test_whitespace_anywhere_json_allows_it():
    text = b"[\r\n[ [ [ 1 ] ,[2.5]\t] ] , [[[-3e1] , [ 4 ]]]\n] \n"
    same(text, 2, shape=(1, 2, 1))


@pytest.mark.parametrize("number", [
    "12345678901234567",  # 17 digits: beyond 2**53
    "9007199254740992", "0.30000000000000004", "1.00000000000000000001", "123456789.123456789",
    "1e23", "1e-23", "5e-324", "1.7976931348623157e308", "1e400", "-1e400", "0.5e-22", "1000000000000000000000000",
    "1.5000000000000000000", "0.00000000000000000000001"])
def test_numbers_off_the_exact_path_fall_back(number):
    row = ["0.5"] * 63 + [number]
    refused(block([row]))
    assert general(block([row]), np.float32) is not None or number in ("1e400", "-1e400", "1000000000000000000000000")


@pytest.mark.parametrize("number", ["01", "-01", "00", "1.", ".5", "-", "+1", "1e", "1e+", "1.e5", "--1", "0x10",
                                    "NaN", "Infinity", "-Infinity", "true", "false", "null", '"1"', "{}", "1 2",
                                    "1..2", "1e5.5", "\u00a01", "1f", "١"])
def test_malformed_or_non_numbers_fall_back(number):
    row = ["0.5"] * 63 + [number]
    refused(block([row]))


@pytest.mark.parametrize("text", [
    b"", b"[", b"[]", b"[[]]", b"[[[[1]]]]", b"[[[1],[2]]", b"[[[1],[2]]]]", b"[[[1],[2]]] x", b"[[[1],[2]],]",
    b"[[[1],[2],]]", b"[[[1] [2]]]", b"[[[1],[2,3]]]", b"[[1,2]]", b"[[[1],2]]", b"[[[[1]],[2]]]", b"{}",
    b"[[[1],[2]]][[[1],[2]]]", b"[[[1],[2]]]\x00", b"[[[1],[2]],[[3],[4]]]"])
def test_wrong_nesting_falls_back(text):
    refused(text, rows=1, shape=(2, 1))


def test_ragged_and_miscounted_blocks_fall_back():
    good = block([["1"] * 64, ["2"] * 64])
    same(good, 2)
    refused(good, rows=3)
    refused(good, rows=1)
    refused(good, rows=2, shape=(8, 8, 2))
    refused(good, rows=2, shape=(64,))
    refused(b"[[[1],[2]],[[3]]]", rows=2, shape=(2, 1))
    refused(b"[[[1],[2]],[[3],[4],[5]]]", rows=2, shape=(2, 1))
    refused(b"[[[1],[2]],[[3,4],[5]]]", rows=2, shape=(2, 1))
    same(b"[[[1],[2]],[[3],[4]]]", rows=2, shape=(2, 1))


def test_dtypes_and_shapes_it_does_not_take():
    text = block([["1"] * 64])
    for dtype in (np.int32, np.int64, np.float16, np.uint8, object):
        refused(text, dtype=dtype)
    refused(text, shape=(8, None, 1))
    refused(text, shape=())
    refused(text, rows=0)


def test_layout_parses_blocks_only_for_a_float_input():
    text = block([[repr(0.25 * i) for i in range(64)]] * 3)
    floats = Layout({"x": TensorInfo("x", np.dtype(np.float32), (None, *SHAPE))})
    assert floats.compiled_numbers
    got = floats.numeric_rows(text, 3)
    assert got.dtype == np.float32 and got.tobytes() == general(text, np.float32).tobytes()
    assert floats.numeric_rows(text).dtype == np.float64  # no row count: the general path, as before
    # a shape the parser does not take: the general path's array, unchanged
    flat = Layout({"x": TensorInfo("x", np.dtype(np.float32), (None, 64))})
    assert flat.numeric_rows(text, 3).dtype == np.float64
    ints = Layout({"x": TensorInfo("x", np.dtype(np.int32), (None, *SHAPE))})
    assert not ints.compiled_numbers and ints.numeric_rows(text, 3).dtype == np.float64
    assert not Layout(floats.inputs, key_field="id").compiled_numbers


def test_without_numba_the_general_path_answers_and_says_so_once(monkeypatch, capsys):
    def broken():
        raise ImportError("No module named 'numba'")
    monkeypatch.setattr(numparse, "_compiled", None)
    monkeypatch.setattr(numparse, "_build", broken)
    text = block([["1.5"] * 64])
    assert numparse.parse_rows(text, 1, SHAPE, np.float32) is None
    assert numparse.parse_rows(text, 1, SHAPE, np.float32) is None
    layout = Layout({"x": TensorInfo("x", np.dtype(np.float32), (None, *SHAPE))})
    assert layout.numeric_rows(text, 1).tobytes() == np.full((1, *SHAPE), 1.5).tobytes()
    assert capsys.readouterr().err.count("numba") == 1


def test_the_server_never_imports_numba():
    code = ("import sys; import wsgi; import api.files.columns, api.files.readers, api.files.pipeline; "
            "assert 'numba' not in sys.modules and 'llvmlite' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_exact_fast_path_agrees_with_pythons_float_on_a_random_corpus():
    # Beyond fastjson: against Python's own correctly rounded float(), mantissas up to 2**53 - 1.
    rng = np.random.default_rng(11)
    texts = []
    for _ in range(64 * 32):
        digits = str(int(rng.integers(1, 2 ** 53)))
        point = int(rng.integers(0, len(digits) + 1))
        text = digits[:point] + ("." + digits[point:] if point < len(digits) else "")
        text = ("0" + text if text.startswith(".") else text) + (f"e{int(rng.integers(-6, 7))}")
        texts.append(("-" if rng.random() < 0.5 else "") + text)
    rows = [texts[i:i + 64] for i in range(0, len(texts), 64)]
    text = block(rows)
    got = numparse.parse_rows(text, len(rows), SHAPE, np.float64)
    assert got is not None
    assert got.tobytes() == np.array([float(t) for t in texts]).reshape(got.shape).tobytes()
    same(text, len(rows))


_JSON_NUMBER = r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?\Z"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.from_regex(_JSON_NUMBER), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                          st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: str(np.float32(v))),
                          st.integers(-2 ** 60, 2 ** 60).map(str)), min_size=1, max_size=12),
       st.sampled_from([np.float32, np.float64]))
def test_any_json_number_is_taken_exactly_or_refused(numbers, dtype):
    text = ("[[" + ",".join(numbers) + "]]").encode()
    got = numparse.parse_rows(text, 1, (len(numbers),), dtype)
    if got is not None:
        expected = general(text, dtype)
        assert expected is not None and got.tobytes() == expected.tobytes(), numbers
