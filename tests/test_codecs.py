"""Pure request parsing: JSON depth, numbers to arrays, images to instances."""
import json
import random

import numpy as np
import pytest

from api.protocols import codecs
from api.protocols.codecs import cast, json_depth, load_json, require_json, to_array
from api.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from api.protocols.images import image_to_instance
from api.model.store import ImageSpec
from tests.conftest import png_b64


@pytest.mark.parametrize("document, depth", [
    ({}, 1), ({"a": [1, [2]]}, 3), ({"s": "[[[[{{{"}, 1), ({"s": 'x\\"[[[', "a": [[1]]}, 3),
    ({"s": "\\", "a": [[[1]]]}, 4), ({"s": "\\\\\"[", "a": []}, 2), ([[[[]]]], 4)])
def test_json_depth_counts_only_structure_outside_strings(document, depth):
    assert json_depth(json.dumps(document).encode()) == depth


def test_deep_json_is_refused_before_parsing():
    with pytest.raises(InvalidInput, match="depth 100000"):
        load_json(b"[" * 100_000 + b"]" * 100_000, max_depth=32)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/json; charset=utf-8",
                                          "application/vnd.api+json"])
def test_json_content_types_are_accepted(content_type):
    require_json(content_type)


def test_other_content_types_are_415():
    with pytest.raises(UnsupportedMediaType):
        require_json("multipart/form-data; boundary=x")


def test_to_array_casts_ints_to_the_model_dtype():
    array = to_array([[1, 2], [3, 4]], np.dtype("float32"), "x")
    assert array.dtype == np.float32 and array.shape == (2, 2)


def test_floats_are_refused_for_integer_models():
    with pytest.raises(InvalidInput, match="holds floats"):
        cast(np.array([1.5]), np.dtype("int32"), "x")


def test_integer_overflow_is_refused():
    with pytest.raises(InvalidInput, match="out of the range of uint8"):
        cast(np.array([300]), np.dtype("uint8"), "x")


def test_a_boolean_token_inside_a_string_does_not_trigger_a_false_refusal():
    body = b'{"note": "[ true ]", "instances": [[1.0, 2.0]]}'
    assert to_array([[1.0, 2.0]], np.dtype("float32"), "x", body).shape == (1, 2)


def test_load_json_with_tensors_gives_the_array_numpy_would_make_of_the_lists():
    rows = np.random.default_rng(0).random((4, 32, 32, 3)).round(3).tolist()
    body = json.dumps({"instances": rows, "top_k": 2}).encode()
    document = load_json(body, max_depth=32, tensors=True)
    assert isinstance(document["instances"], np.ndarray) and document["top_k"] == 2
    expected = np.asarray(load_json(body, max_depth=32)["instances"])
    assert document["instances"].dtype == expected.dtype and np.array_equal(document["instances"], expected)


def test_load_json_with_tensors_keeps_the_depth_limit_and_its_message():
    body = json.dumps({"instances": [[[[[[[[0.5] * 400]]]]]]]}).encode()
    with pytest.raises(InvalidInput, match="JSON nesting depth 9 is over the limit of 8"):
        load_json(body, max_depth=8, tensors=True)


def test_to_array_takes_the_fast_paths_array_without_walking_it_for_booleans():
    body = b'{"inputs": [{"data": [0.5, 1.5]}], "parameters": {"binary_data_output": true}}'
    array = to_array(np.array([0.5, 1.5]), np.dtype("float32"), "x", body)
    assert array.dtype == np.float32 and array.tolist() == [0.5, 1.5]


def test_image_pixels_limit_reads_only_the_header(digits):
    import base64
    data = base64.b64decode(png_b64(digits[0][0], size=64))
    with pytest.raises(PayloadTooLarge, match="64x64 = 4096 pixels"):
        image_to_instance(data, ImageSpec(color_mode="L"), (8, 8, 1), max_pixels=4095, what="x")


def test_rgb_image_with_bgr_order_and_per_channel_offset():
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buffer, "PNG")
    spec = ImageSpec(color_mode="RGB", scale=1.0, offset=(-1.0, -2.0, -3.0), channel_order="BGR")
    instance = image_to_instance(buffer.getvalue(), spec, (2, 2, 3), max_pixels=100, what="x")
    assert instance.shape == (2, 2, 3)
    assert instance[0, 0].tolist() == [29.0, 18.0, 7.0]


def test_a_grey_model_cannot_take_an_rgb_spec():
    with pytest.raises(InvalidInput, match="cannot be fed from a RGB image"):
        image_to_instance(b"", ImageSpec(color_mode="RGB"), (8, 8, 1), max_pixels=100, what="x")


def test_small_bodies_count_their_depth_as_big_ones_do(monkeypatch):
    """Bodies under 4 kB peel bracket pairs instead of numpy's scan: the same depth for any text,
    balanced or not, quotes and escapes included."""
    rng = random.Random(0)
    alphabet = b'[]{}"\\ 1,a:'
    texts = [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(20000)]
    texts += [b"[" * d + b"]" * d for d in range(1, 80)] + [b'{"a": "[[[", "b": [[1]]}']
    small = [codecs.json_depth(text) for text in texts]
    monkeypatch.setattr(codecs, "_SMALL_BODY", -1)
    assert small == [codecs.json_depth(text) for text in texts]
