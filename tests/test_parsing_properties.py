"""Property-based tests (Hypothesis): the parsers answer any JSON with a result or an ApiError, never a crash."""
import json
from unittest.mock import patch

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from api.protocols import codecs

from api.protocols import tfserving

from api.protocols import v2
from api.protocols.codecs import json_depth
from api.errors import ApiError
from api.protocols.fastjson import numeric_array
from api.settings import Settings
from tests.signatures import signature_of, two_input_signature

SCALARS = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=8)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                         max_leaves=40)


def reference_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


@given(DOCUMENTS)
def test_json_depth_matches_a_recursive_count(document):
    assert json_depth(json.dumps(document).encode()) == reference_depth(document)


RUNTIME = signature_of((2, 2))
SETTINGS = Settings(max_instances=8)
PREDICT = st.fixed_dictionaries({}, optional={"instances": DOCUMENTS, "inputs": DOCUMENTS, "top_k": DOCUMENTS,
                                              "signature_name": DOCUMENTS})


@hsettings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(PREDICT | st.dictionaries(st.text(max_size=5), DOCUMENTS, max_size=3))
def test_parse_predict_returns_a_batch_or_raises_an_api_error(document):
    body = json.dumps(document).encode()
    try:
        request = tfserving.parse_predict(document, body, RUNTIME, SETTINGS)
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    (batch,) = request.inputs.values()
    assert batch.dtype == np.float32 and batch.shape[1:] == (2, 2)
    assert np.isfinite(batch).all()


@given(st.lists(st.lists(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2), min_size=2, max_size=2),
                min_size=1, max_size=8))
def test_valid_instances_always_parse_to_the_same_numbers(instances):
    document = {"instances": instances}
    request = tfserving.parse_predict(document, json.dumps(document).encode(), RUNTIME, SETTINGS)
    assert np.allclose(request.inputs["image"], np.asarray(instances, dtype=np.float32))


# -- the numbers-only fast path (api/fastjson.py) against the ordinary path ----------------------------
# JSON text written token by token, so that whitespace, number spellings and near misses (ragged rows,
# a boolean, a string, an object, a list among numbers, tokens JSON forbids) land anywhere.
JSON_SPACE = st.sampled_from(["", "", " ", "\n", "\t", "\r\n  "])
NUMBER_TEXT = (st.from_regex(r"-?(0|[1-9][0-9]{0,22})(\.[0-9]{1,22})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
               | st.integers(-(2**70), 2**70).map(str)
               | st.floats(allow_nan=False, allow_infinity=False).map(repr)
               | st.sampled_from(["-0", "-0.0", "0", "1e400", "-1e400", "1e-400", "5e-324", "1E5", "3.5e38",
                                  "1e39", "65504", "70000", "300", "-129", "9223372036854775807",
                                  "9223372036854775808", "-9223372036854775809", "18446744073709551615",
                                  "18446744073709551616"]))
INT_TEXT = st.integers(-300, 300).map(str)
ODD_TEXT = st.sampled_from(["true", "false", "null", '"a"', '"1"', "{}", '{"a": 1}', "[]", "[1]", "[[0.5]]",
                            "NaN", "Infinity", "-Infinity", "01", "1.", ".5", "+1", "0x1", "1e", "--1",
                            "\x0c1", "1 2", ""])


@st.composite
def tensor_texts(draw):
    """A nested array of numbers as JSON text: mostly regular, sometimes ragged or holding something else."""
    shape = draw(st.lists(st.sampled_from([1, 2, 3] * 3 + [0]), min_size=1, max_size=4))
    leaf = draw(st.sampled_from([NUMBER_TEXT, INT_TEXT, st.floats(-2, 2).map(repr), NUMBER_TEXT | INT_TEXT]))
    odd = draw(st.sampled_from([0, 0, 0.02, 0.2]))  # how often a leaf or a row is a near miss

    def array(level: int) -> str:
        if level == len(shape):
            return draw(ODD_TEXT) if odd and draw(st.floats(0, 1)) < odd else draw(leaf)
        items = [array(level + 1) for _ in range(shape[level])]
        if odd and items and draw(st.floats(0, 1)) < odd:  # drop, add or wrap one item: ragged or deeper
            how = draw(st.sampled_from(["drop", "add", "wrap"]))
            items = {"drop": items[:-1], "add": items + items[:1],
                     "wrap": ["[" + items[0] + "]"] + items[1:]}[how]
        comma = draw(JSON_SPACE) + "," + draw(JSON_SPACE)
        return "[" + draw(JSON_SPACE) + comma.join(items) + draw(JSON_SPACE) + "]"
    return array(0)


# Beside the tensor, now and then, something that could mislead the search for it or its placeholder.
MISLEADING = ['"x": [1, [2]]', '"note": "\\"instances\\": [1]"', '"instances": 3', '"inputs": [[1.5]]',
              '"instances": [[1.5]]', '"s": "\x7ffastjson tensor\x7f"', '"s": "\\u007f"',
              '"x": {"y": [[[[1]]]]}']


def tfserving_layout(tensor: str, draw) -> str:
    key = draw(st.sampled_from(["instances", "inputs"]))
    value = draw(st.sampled_from(["{0}", "{0}", "{0}", '{{"image": {0}}}', '{{"other": {0}}}',
                                  '{{"image": {0}, "b64": "x"}}', '{{"image": {0}, "other": [[1, 2]]}}',
                                  '{{"other": [[1, 2]], "image": {0}}}', '[{{"image": {0}, "other": [1, 2]}}]']))
    parts = [f'"{key}": ' + value.format(tensor)]
    harmless = st.sampled_from(['"top_k": 1', '"signature_name": "serving_default"'])
    extras = draw(st.lists(harmless, max_size=2))
    if draw(st.sampled_from([False, False, False, True])):
        extras.append(draw(st.sampled_from(MISLEADING)))
    for extra in extras:
        parts.insert(draw(st.integers(0, len(parts))), extra)
    return "{" + ", ".join(parts) + "}"


def v2_layout(tensor: str, draw) -> str:
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    outputs = draw(st.sampled_from(["", ', "outputs": [{"name": "probs", '
                                        '"parameters": {"binary_data": true}}]']))
    other = draw(st.sampled_from(["", ', {"name": "other", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]}']))
    return ('{"inputs": [{"name": "image", "shape": %s, "datatype": "FP32", "data": %s}%s]%s}'
            % (json.dumps(shape), tensor, other, outputs))


FAST_SETTINGS = Settings(max_instances=3, max_json_depth=6, max_tensor_elements=40)
MODELS = [signature_of(shape, dtype)
          for dtype, shape in [("float32", (None, None)), ("int32", (None, None)), ("uint8", (None,)),
                               ("float32", ()), ("float16", (2, 2)), ("float64", (None, None, None)),
                               ("int64", (None, None)), ("float32", (None,))]] + [
    two_input_signature((None, None)), two_input_signature((2, 2), other_shape=(None,))]


def outcome(fn):
    """A parse's batches to the bit, or its error's class and message."""
    try:
        inputs = fn().inputs
    except Exception as exc:  # any exception at all: whatever one path raises, the other must raise too
        return type(exc).__name__, str(exc)
    return "ok", [(name, batch.dtype.str, batch.shape, batch.tobytes()) for name, batch in inputs.items()]


@hsettings(suppress_health_check=[HealthCheck.too_slow], max_examples=400, deadline=None)
@given(st.data())
def test_the_fast_path_and_the_ordinary_path_agree_on_any_body(data):
    """With the fast path on for every size, each body ends as it does without it: the same batch to
    the bit, or the same error with the same message."""
    tensor = data.draw(tensor_texts())
    protocol = data.draw(st.sampled_from(["tfserving", "v2"]))
    body = (tfserving_layout if protocol == "tfserving" else v2_layout)(tensor, data.draw).encode()
    model = data.draw(st.sampled_from(MODELS))

    def parse(fast: bool):
        with patch.object(codecs, "FAST_TENSOR_BYTES", 0 if fast else 1 << 62):
            if protocol == "v2":
                return v2.parse_infer(body, None, model, FAST_SETTINGS)
            document = codecs.load_json(body, FAST_SETTINGS.max_json_depth, tensors=True)
            return tfserving.parse_predict(document, body, model, FAST_SETTINGS)

    assert outcome(lambda: parse(True)) == outcome(lambda: parse(False))


@hsettings(max_examples=300, deadline=None)
@given(tensor_texts() | st.text(st.sampled_from('[]{},.-+eE0123456789 \n"tfnul'), max_size=40))
def test_a_numeric_array_is_what_orjson_and_numpy_make_of_the_text(text):
    array = numeric_array(text.encode())
    if array is not None:
        expected = np.asarray(orjson.loads(text))
        assert array.dtype == expected.dtype and array.shape == expected.shape
        assert array.tobytes() == expected.tobytes()


NUMBERS = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).flatmap(lambda shape: st.tuples(
    st.just(shape), st.lists(NUMBERS, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))))
def test_every_regular_array_of_numbers_takes_the_fast_path(case):
    """The fast path is not vacuous: what it exists for, it takes."""
    shape, flat = case
    text = orjson.dumps(np.asarray(flat, dtype=object).reshape(shape).tolist())
    array = numeric_array(text)
    assert array is not None and array.tobytes() == np.asarray(orjson.loads(text)).tobytes()
