"""The numbers-only JSON fast path (api/fastjson.py, codecs.load_json(tensors=True)).

What it must prove: it only accepts a tensor it can show is exactly what orjson + np.asarray make of
it (shape, dtype, every bit of every value), and leaves everything else, every error above all, to the
ordinary path. tests/test_parsing_properties.py checks the same on random documents.
"""
import json

import numpy as np
import orjson
import pytest

from api.protocols import codecs

from api.protocols import tfserving

from api.protocols import v2
from api.protocols.codecs import load_json
from api.errors import ApiError
from api.protocols.fastjson import PLACEHOLDER, numeric_array, split_tensor, with_placeholder
from api.settings import Settings
from tests.signatures import signature_of

SETTINGS = Settings()


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to the bit: dtype, shape and bytes (so -0.0 is not 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def ordinary(text: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(text))


def holds_array(value) -> bool:
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, np.ndarray) or isinstance(value, list) and any(map(holds_array, value))


def runtime(shape=(8, 8, 1), dtype="float32", name="image"):
    return signature_of(shape, dtype, name)


def outcome(fn):
    """What a parse ends in: its batch to the bit, or its error's class, status and message."""
    try:
        result = fn()
    except ApiError as exc:
        return type(exc).__name__, exc.status, exc.message
    return "ok", [(name, batch.dtype.str, batch.shape, batch.tobytes()) for name, batch in result.inputs.items()]


def predict(body: bytes, model, tensors: bool, settings=SETTINGS):
    return outcome(lambda: tfserving.parse_predict(load_json(body, settings.max_json_depth, tensors), body,
                                                   model, settings))


def infer(body: bytes, model, tensors: bool, settings=SETTINGS):
    def run():
        saved = codecs.FAST_TENSOR_BYTES
        codecs.FAST_TENSOR_BYTES = codecs.FAST_TENSOR_BYTES if tensors else 1 << 62
        try:
            return v2.parse_infer(body, None, model, settings)
        finally:
            codecs.FAST_TENSOR_BYTES = saved
    return outcome(run)


# -- numeric_array: exactly np.asarray(orjson.loads(text)), or None -----------------------------------
@pytest.mark.parametrize("text", [
    b"[0.5, 1.25, -3.0]", b"[[1, 2], [3, 4]]", b"[[1, 2.5], [3, 4]]", b"[1E5, 2e-3, -0.0, 0.1e1]",
    b"[-0, 1]", b"[-0, 0.5]", b"[ [ 1 ,\n2 ] ,\r\n\t[3,4]\n]", b"[[[[[[[1]]]]]]]", b"[1e-400, 5e-324]",
    b"[9223372036854775807, -9223372036854775808]", b"[9007199254740993, 0.5]",
    b"[18446744073709551615, 0.5]", b"[9223372036854775808, -1, 0.5]", b"[1.7976931348623157e308]",
    b"[0." + b"3" * 400 + b"]", b"[" + b"1" * 19 + b"e-19]",
])
def test_accepted_arrays_are_the_ordinary_paths_to_the_bit(text):
    array = numeric_array(text)
    assert array is not None
    assert same(array, ordinary(text))


@pytest.mark.parametrize("text", [
    b"[]", b"[[]]", b"[[1], []]", b"[[1, 2], [3]]", b"[[1, 2], 3]", b"[1, [2]]", b"[[1], [2, [3]]]",
    b"[1, true]", b"[false]", b"[1, null]", b'[1, "2"]', b"[1, {}]", b"[NaN]", b"[Infinity]", b"[1e400]",
    b"[-1e400]", b"[9223372036854775808]", b"[-9223372036854775809]", b"[18446744073709551616, 0.5]",
    b"[01]", b"[1.]", b"[.5]", b"[+1]", b"[1e]", b"[--1]", b"[1 2]", b"[1,]", b"[,1]", b"[1]]", b"[[1]",
    b"[1]\x0c", b"[\x0c1]", b"[1] [2]", b"5", b"",
])
def test_anything_else_is_left_to_the_ordinary_path(text):
    assert numeric_array(text) is None


def test_ints_stay_int64_and_floats_float64_as_numpy_makes_them():
    assert numeric_array(b"[[1, 2], [3, 4]]").dtype == np.int64
    assert numeric_array(b"[[1, 2], [3, 4.0]]").dtype == np.float64
    assert numeric_array(b"[1e2]").dtype == np.float64  # an exponent makes a float, as in JSON parsers


def test_an_integer_minus_zero_is_plus_zero_and_a_float_one_keeps_its_sign():
    assert not np.signbit(numeric_array(b"[-0, 0.5]")[0])
    assert np.signbit(numeric_array(b"[-0.0, 1]")[0])


# -- where the tensor is, and what stands for it --------------------------------------------------
@pytest.mark.parametrize("body, tensor", [
    (b'{"instances": [[1, 2]]}', b"[[1, 2]]"),
    (b'{"instances":[[1,2]],"top_k":3}', b"[[1,2]]"),
    (b'{"signature_name": "serving_default", "inputs" :\n[ -1 ] }', b"[ -1 ]"),
    (b'{"inputs": {"image": [[0.5]]}}', b"[[0.5]]"),
    (b'{"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}', b"[1, 2]"),
])
def test_split_finds_the_tensor_of_each_layout(body, tensor):
    head, found, tail = split_tensor(body)
    assert found == tensor and head + found + tail == body


@pytest.mark.parametrize("body", [b'{"instances": [{"b64": "AAAA"}]}', b'{"shape": [1, 2]}', b'{"x": "[1]"}'])
def test_split_finds_nothing_where_no_tensor_of_numbers_is(body):
    assert split_tensor(body) is None


@pytest.mark.parametrize("part", [b'"\x7f"', b'"\\u007f"', b'"\\u007F"'])
def test_a_body_that_could_spell_the_placeholder_is_left_to_the_ordinary_path(part):
    assert with_placeholder(b'{"x": ' + part + b', "instances": ', b"}") is None
    assert with_placeholder(b'{"instances": ', b', "x": ' + part + b"}") is None
    assert PLACEHOLDER.encode() in with_placeholder(b'{"instances": ', b"}")


# -- load_json(tensors=True) on whole bodies -----------------------------------------------------------
def resnet_body(**extra) -> bytes:
    pixels = np.random.default_rng(0).random((224, 224, 3)).round(3)
    return json.dumps({"instances": [pixels.tolist()], **extra}).encode()


def test_a_resnet_sized_body_takes_the_fast_path_and_gives_the_ordinary_batch():
    body = resnet_body(top_k=5)
    document = load_json(body, 32, tensors=True)
    assert isinstance(document["instances"], np.ndarray) and document["top_k"] == 5
    assert same(document["instances"], np.asarray(load_json(body, 32)["instances"]))
    model = runtime((224, 224, 3))
    assert predict(body, model, True) == predict(body, model, False)


def test_bodies_under_the_threshold_take_the_ordinary_path():
    body = orjson.dumps({"instances": [np.zeros((8, 8, 1)).tolist()]})  # the digits request's size
    assert len(body) < codecs.FAST_TENSOR_BYTES
    assert isinstance(load_json(body, 32, tensors=True)["instances"], list)


def test_without_tensors_load_json_is_unchanged():
    assert isinstance(load_json(resnet_body(), 32)["instances"], list)


DIGIT = np.linspace(0, 1, 64).reshape(8, 8, 1).round(4).tolist()
BIG = [DIGIT] * 8  # 8 digits: a ~3 kB body, over the threshold
RAGGED = [DIGIT] * 7 + [DIGIT[:7]]


def body_of(document) -> bytes:
    body = json.dumps(document, allow_nan=True).encode()
    assert len(body) >= codecs.FAST_TENSOR_BYTES
    return body


BAD = [  # (id, body, model dtype, words the ordinary path's error holds)
    ("nesting-depth", b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b', "x": "' + b" " * 3000 + b'"}',
     "float32", "nesting depth 41"),
    ("malformed", body_of({"instances": BIG})[:-5], "float32", "malformed JSON"),
    ("nan", body_of({"instances": BIG[:-1] + [[[[float("nan")]] * 8] * 8]}), "float32", "malformed JSON"),
    ("infinity-literal", body_of({"instances": BIG}).replace(b"[0.0]", b"[1e999]", 1), "float32", "infinity"),
    ("booleans", body_of({"instances": BIG[:-1] + [[[[True]] + [[0.5]] * 7] * 8]}), "float32", "booleans"),
    ("nulls", body_of({"instances": BIG[:-1] + [[[[None]] * 8] * 8]}), "float32", "non-numbers"),
    ("strings", body_of({"instances": BIG[:-1] + [[[["a"]] * 8] * 8]}), "float32", "strings"),
    ("ragged", body_of({"instances": RAGGED}), "float32", "ragged"),
    ("empty-lists", body_of({"instances": [[[[]] * 8] * 8] * 8}), "float32", "shape"),
    ("floats-for-ints", body_of({"instances": BIG}), "int32", "holds floats"),
    ("out-of-float32-range", body_of({"instances": BIG[:-1] + [[[[1e39]] * 8] * 8]}), "float32",
     "out of the range of float32"),
    ("out-of-uint8-range", body_of({"instances": [[[[300]] * 8] * 8] * 8}), "uint8",
     "out of the range of uint8"),
    ("ints-beyond-int64", body_of({"instances": [[[[2**63]] * 8] * 8] * 8}), "int64", "out of the range"),
    ("shape", body_of({"instances": [[[0.5] * 8] * 8] * 8}), "float32", "the model takes [8, 8, 1]"),
    ("too-many-instances", body_of({"instances": [DIGIT] * 257}), "float32", "257 instances, over the limit"),
    ("too-many-elements", body_of({"instances": [[[[0.5]] * 64] * 64] * 8}), "float32",
     "elements, over the limit"),
    ("duplicate-key", b'{"instances": ' + orjson.dumps(BIG) + b', "instances": 3}', "float32",
     "must be a list"),
    ("both-keys", body_of({"instances": BIG, "inputs": BIG}), "float32", "exactly one of"),
    ("unknown-name", body_of({"inputs": {"pixels": BIG}}), "float32", "this model's input is 'image'"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_every_bad_input_keeps_its_error_with_the_fast_path_on(case):
    _, body, dtype, words = case
    model = runtime(shape=(None, None, None) if case[0] == "too-many-elements" else (8, 8, 1), dtype=dtype)
    settings = Settings(max_tensor_elements=30_000) if case[0] == "too-many-elements" else SETTINGS
    fast, slow = predict(body, model, True, settings), predict(body, model, False, settings)
    assert fast == slow
    assert slow[0] != "ok" and words in slow[2], slow


@pytest.mark.parametrize("document", [
    {"instances": BIG}, {"inputs": BIG}, {"inputs": {"image": BIG}}, {"instances": {"image": BIG}},
    {"instances": [[[[int(v * 10) for v in p] for p in r] for r in d] for d in BIG]},
    {"top_k": 3, "instances": BIG, "signature_name": "serving_default"},
])
def test_good_bodies_give_the_same_batch_either_way(document):
    body = body_of(document)
    assert holds_array(load_json(body, 32, tensors=True))  # the fast path ran
    fast = predict(body, runtime(), True)
    assert fast[0] == "ok" and fast == predict(body, runtime(), False)


def test_an_input_named_data_in_tfserving_row_format_is_the_same_either_way():
    body = body_of({"instances": [{"data": d} for d in BIG]})
    model = runtime(name="data")
    assert predict(body, model, True) == predict(body, model, False)


def v2_body(data, shape=(8, 8, 8, 1), **extra) -> bytes:
    return body_of({"inputs": [{"name": "image", "shape": list(shape), "datatype": "FP32", "data": data}],
                    "outputs": [{"name": "probs", "parameters": {"binary_data": True}}], **extra})


@pytest.mark.parametrize("body", [
    v2_body(BIG), v2_body(np.asarray(BIG).ravel().tolist()), v2_body(BIG, shape=(8, 64)),
    v2_body(RAGGED), v2_body(BIG[:-1] + [[[[True]] * 8] * 8]), v2_body(np.asarray(BIG).ravel().tolist()[:-1]),
])
def test_v2_json_data_is_the_same_either_way(body):
    document = load_json(body, 32, tensors=True)
    model = runtime()
    fast, slow = infer(body, model, True), infer(body, model, False)
    assert fast == slow
    if slow[0] == "ok":
        assert isinstance(document["inputs"][0]["data"], np.ndarray)
