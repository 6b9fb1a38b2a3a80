"""Hypothesis against the request parsing and codecs: whatever bytes, headers or documents come in, the
answer is a result or an `ApiError` with a 4xx status, never any other exception (the server would
answer that with a 500).

The data plane runs whole (body and headers in, response out) on a stand-in model: no TensorFlow, no
HTTP, hundreds of examples a second. tests/faults/test_fuzzing.py sends schemathesis' requests through
the running stack; tests/test_parsing_properties.py checks values (depth counts, parsed numbers).
"""
import base64
import io
import json
import os
import warnings
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from PIL import Image

from api.protocols import v2
from api.protocols.codecs import json_depth, load_json
from api.serving.dataplane import DataPlane
from api.errors import ApiError
from api.protocols.images import decode_b64, image_to_instance
from api.settings import Settings
from api.model.store import ImageSpec
from tests.test_parsing_properties import reference_depth
from api.serving.registry import ServedVersion
from tests.signatures import signature_of, two_input_signature

# A test run is the same every time; FUZZ_EXAMPLES=5000 hunts longer, with fresh random examples.
HUNT = int(os.environ.get("FUZZ_EXAMPLES", 0))
FUZZ = hsettings(max_examples=HUNT or 300, derandomize=not HUNT, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SETTINGS = Settings(max_instances=8, max_tensor_elements=8 * 64, max_json_depth=12, max_image_pixels=48 * 48,
                    max_body_bytes=64 * 1024)


class Batcher:
    """The model's stand-in: ten scores per instance, as digits answers; what the protocols hand the
    batcher is checked: every input of the signature, finite, with the same number of instances."""

    def __init__(self, signature=None):
        self.signature = signature

    def run(self, batch, deadline, client_gone=None, start_by=None):
        assert isinstance(batch, dict) and list(batch) == list(self.signature.inputs)
        assert len({len(value) for value in batch.values()}) == 1
        for name, value in batch.items():
            info = self.signature.inputs[name]
            assert value.ndim == len(info.shape) and value.dtype == info.dtype and np.isfinite(value).all()
        n = len(next(iter(batch.values())))
        return {name: np.full((n, *(d or 1 for d in info.instance_shape)), 0.1, dtype=info.dtype)
                for name, info in self.signature.outputs.items()}


def runtime(shape=(8, 8, 1), dtype="float32", color_mode="L"):
    signature = signature_of(shape, dtype, labels=tuple("0123456789"),
                             image=ImageSpec(color_mode=color_mode, resize="box"))
    return ServedVersion(signature, runtime=None, batcher=Batcher(signature))


# digits' input; a vector of any length (a None dimension); an int model; an RGB image model.
RUNTIMES = [runtime(), runtime((None,)), runtime((2, 2), "int32"), runtime((4, 4, 3), "float32", "RGB")]


def plane(model) -> DataPlane:
    return DataPlane(SimpleNamespace(get=lambda name, version=None: model, name="digits"), SETTINGS)


@contextmanager
def only_api_errors():
    """The property itself: an ApiError must carry a 4xx status and a message; anything else fails."""
    try:
        yield
    except ApiError as exc:
        assert 400 <= exc.status < 500, (exc.status, exc.message)
        assert exc.message


# -- JSON building blocks ---------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=6)
           | st.sampled_from([0, 1, 0.5, -1, 1e39, 2**63, 2**64 - 1, "image", "b64", "FP32", "probs"]))
KEYS = st.sampled_from(["image", "b64", "name", "x", ""]) | st.text(max_size=4)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(KEYS, inner, max_size=3), max_leaves=30)
NUMBERS = st.floats(-1e3, 1e3, width=32) | st.integers(-5, 300)


def dumps(document) -> bytes:
    """JSON as clients write it; orjson refuses what JSON cannot carry (NaN is sent as a literal)."""
    return json.dumps(document, allow_nan=True).encode()


@st.composite
def arrays(draw, shape):
    """A nested list of numbers of exactly `shape` (None dimensions drawn), or a near miss."""
    dims = [draw(st.integers(1, 3)) if d is None else d for d in shape]
    if draw(st.integers(0, 5)) == 0:  # a near miss: one dimension off by one
        i = draw(st.integers(0, len(dims) - 1)) if dims else None
        if i is not None:
            dims[i] = max(0, dims[i] + draw(st.sampled_from([-1, 1])))
    flat = draw(st.lists(NUMBERS, min_size=int(np.prod(dims)), max_size=int(np.prod(dims))))
    return np.asarray(flat, dtype=object).reshape(dims).tolist() if dims else (flat[0] if flat else 0)


# -- images -----------------------------------------------------------------------------------------
MODES = {"PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"], "JPEG": ["L", "RGB", "CMYK"]}


@st.composite
def image_files(draw, max_side=64):
    """A real PNG or JPEG of random mode, size and pixels."""
    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    width, height = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"progressive": draw(st.booleans())} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@st.composite
def damaged(draw, files):
    """A real image cut short, or with bytes overwritten (header, chunk lengths, pixel data alike)."""
    data = bytearray(draw(files))
    how = draw(st.sampled_from(["truncate", "flip", "both", "none"]))
    if how in ("truncate", "both"):
        data = data[:draw(st.integers(0, len(data)))]
    if how in ("flip", "both") and data:
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


IMAGE_BYTES = damaged(image_files()) | st.binary(max_size=200) | st.sampled_from([
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"GIF89a", b""])


# -- TF Serving: row and columnar formats -----------------------------------------------------------
@st.composite
def instances(draw, model, broken=()):
    """One instance: numbers of the model's shape, a b64 image or the named form; or anything."""
    kind = draw(st.sampled_from(["numbers", "b64", "named"] + (["anything"] if "instance" in broken else [])))
    if kind == "numbers":
        return draw(arrays(model.signature.input.instance_shape))
    if kind == "b64":
        data = draw(image_files(max_side=60) if "image" not in broken else IMAGE_BYTES)
        return {"b64": base64.b64encode(data).decode() if "b64" not in broken else draw(st.text(max_size=12))}
    if kind == "named":
        return {"image": draw(instances(model))}
    return draw(DOCUMENTS)


PREDICT_FIELDS = ["key", "count", "instance", "image", "b64", "top_k", "signature_name", "extra"]


@st.composite
def predict_bodies(draw, model):
    """A valid row or columnar body with none, one or two of its parts broken."""
    broken = draw(st.sets(st.sampled_from(PREDICT_FIELDS), max_size=2))
    key = draw(st.sampled_from(["instances", "inputs"]))
    most = SETTINGS.max_instances
    count = draw(st.integers(0, most + 1) if "count" in broken else st.integers(1, most))
    values = draw(st.lists(instances(model, broken), min_size=count, max_size=count))
    document = {key: {"image": values} if key == "inputs" and draw(st.booleans()) else values}
    if "key" in broken:
        document[draw(st.sampled_from(["instances", "inputs", "instance", "signature"]))] = draw(DOCUMENTS)
    if draw(st.booleans()) or "top_k" in broken:
        document["top_k"] = draw(st.integers(-1, 12) | DOCUMENTS if "top_k" in broken else st.integers(1, 10))
    if draw(st.booleans()) or "signature_name" in broken:
        document["signature_name"] = draw(DOCUMENTS) if "signature_name" in broken else "serving_default"
    if "extra" in broken:
        document[draw(st.text(max_size=4))] = draw(DOCUMENTS)
    return dumps(document)


@pytest.mark.parametrize("model", RUNTIMES, ids=["digits", "vector", "int32", "rgb"])
@FUZZ
@given(data=st.data())
def test_tfserving_predict_answers_or_refuses_with_a_4xx(model, data):
    body = data.draw(predict_bodies(model) | st.builds(dumps, DOCUMENTS) | st.binary(max_size=64))
    content_type = data.draw(st.sampled_from(["application/json", None, "text/plain", "application/x+json"]))
    with only_api_errors():
        answer = plane(model).tfserving_predict("digits", None, body, content_type)
        orjson.loads(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))
        assert set(answer) <= {"predictions", "outputs", "top_k"}


# -- KServe v2: JSON and the binary tensor extension ------------------------------------------------
DIMS = (st.integers(0, 9) | st.integers(-3, -1) | st.integers(-(2**63), 2**64 - 1)
        | st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64 - 1]))
V2_FIELDS = ["name", "shape", "datatype", "data", "binary_size", "blob", "header", "content_type", "id",
             "parameters", "outputs", "output_name", "extra"]


@st.composite
def v2_requests(draw, model):
    """(body, Inference-Header-Content-Length, Content-Type): a valid request, JSON or binary, with
    none, one or two of its parts broken."""
    broken = draw(st.sets(st.sampled_from(V2_FIELDS), max_size=2))

    def part(field, valid, invalid):
        return draw(invalid) if field in broken else draw(valid)

    spec = model.signature.input
    valid_shape = [draw(st.integers(1, SETTINGS.max_instances))] + [
        draw(st.integers(1, 4)) if d is None else d for d in spec.instance_shape]
    count = int(np.prod(valid_shape))
    tensor = {
        "name": part("name", st.just("image"), SCALARS | DOCUMENTS),
        "shape": part("shape", st.just(valid_shape), st.lists(DIMS, max_size=6) | DOCUMENTS
                      | st.integers(60, 70).map(lambda n: [1] * n)
                      | st.sampled_from([[1, 0, 2**63], [1, 0, 2**40, 2**40], [2**32, 2**32], [0, 8, 8, 1]])),
        "datatype": part("datatype", st.just(v2.V2_NAMES[spec.dtype]),
                         st.sampled_from(sorted(v2.DATATYPES)) | st.text(max_size=5) | SCALARS)}
    binary = b""
    if draw(st.booleans()):  # the binary extension
        size = count * spec.dtype.itemsize
        values = draw(st.lists(NUMBERS, min_size=count, max_size=count))
        blob = np.asarray(values).astype(spec.dtype).tobytes()
        blob = part("blob", st.just(blob),
                    st.binary(min_size=size, max_size=size) | st.binary(max_size=2 * size + 8))
        tensor["parameters"] = {"binary_data_size": part("binary_size", st.just(len(blob)),
                                                         st.integers(-2, 2 * len(blob) + 8) | DOCUMENTS)}
        binary = blob
    else:
        tensor["data"] = part("data", st.lists(NUMBERS, min_size=count, max_size=count) | arrays(valid_shape),
                              st.lists(NUMBERS, max_size=count + 2) | DOCUMENTS)
    document = {"inputs": [tensor]}
    if draw(st.booleans()) or "id" in broken:
        document["id"] = part("id", st.text(max_size=4), SCALARS)
    if draw(st.booleans()) or "parameters" in broken:
        document["parameters"] = part(
            "parameters", st.fixed_dictionaries({"binary_data_output": st.booleans()}),
            DOCUMENTS | st.fixed_dictionaries({"binary_data_output": SCALARS}))
    if draw(st.booleans()) or "outputs" in broken or "output_name" in broken:
        output = {"name": part("output_name", st.just("probs"), SCALARS | DOCUMENTS)}
        if draw(st.booleans()):
            output["parameters"] = {"binary_data": draw(st.booleans())}
        document["outputs"] = part("outputs", st.just([output]), DOCUMENTS | st.lists(DOCUMENTS, max_size=2))
    if "extra" in broken:
        document[draw(st.sampled_from(["inputs", "x", ""]))] = draw(DOCUMENTS)
    head = dumps(document)
    header = part("header", st.just(str(len(head))) if binary else st.none(),
                  st.none() | st.integers(-2, len(head) + len(binary) + 2).map(str)
                  | st.text(st.characters(max_codepoint=255), max_size=6)
                  | st.sampled_from(["\xb2", "1\xb3", "0" * 30 + "5", "9" * 5000]))
    content_type = part("content_type", st.sampled_from(["application/json", None]) if not binary
                        else st.sampled_from(["application/octet-stream", None]),
                        st.sampled_from(["text/plain", "application/octet-stream", "multipart/form-data"]))
    return head + binary, header, content_type


@pytest.mark.parametrize("model", RUNTIMES, ids=["digits", "vector", "int32", "rgb"])
@FUZZ
@given(data=st.data())
def test_v2_infer_answers_or_refuses_with_a_4xx(model, data):
    body, header, content_type = data.draw(v2_requests(model))
    with only_api_errors():
        answer, headers = plane(model).infer("digits", None, body, content_type, header)
        head = answer[:int(headers[v2.HEADER])] if v2.HEADER in headers else answer
        assert orjson.loads(head)["outputs"]  # an empty 'outputs' list asks for all of them


@FUZZ
@given(st.binary(max_size=300), st.none() | st.text(st.characters(max_codepoint=255), max_size=8))
def test_v2_infer_takes_any_bytes_and_any_header(body, header):
    with only_api_errors():
        plane(RUNTIMES[0]).infer("digits", None, body, "application/json", header)


@FUZZ
@given(st.text(st.characters(max_codepoint=255), max_size=24) | st.integers(-5, 10**6).map(str),
       st.integers(0, 10**6))
def test_header_length_is_a_length_within_the_body_or_a_400(value, body_length):
    """gunicorn hands header values over as latin-1 text: '²' is a digit to str.isdigit, not to int()."""
    with only_api_errors():
        length = v2.parse_header_length(value, body_length)
        assert 0 < length <= body_length and str(length) == value.lstrip("0")


# -- a model with two inputs (an image and an int vector of any length) and two outputs ----------------
PAIR_SIGNATURE = two_input_signature((4, 4, 1), other_shape=(None,), image=ImageSpec(color_mode="L", resize="box"))
PAIR = ServedVersion(PAIR_SIGNATURE, runtime=None, batcher=Batcher(PAIR_SIGNATURE))
PAIR_FIELDS = ["names", "count", "instance", "image", "top_k", "ragged", "form"]


@st.composite
def pair_predict_bodies(draw):
    """A valid two-input body, row or columnar, with none, one or two of its parts broken."""
    broken = draw(st.sets(st.sampled_from(PAIR_FIELDS), max_size=2))
    count = draw(st.integers(0, SETTINGS.max_instances + 1) if "count" in broken
                 else st.integers(1, SETTINGS.max_instances))
    width = draw(st.integers(1, 3))  # `other` takes any length, one per request

    def instance():
        if "image" not in broken and draw(st.booleans()):
            image = {"b64": base64.b64encode(draw(image_files(max_side=12))).decode()}
        elif "image" in broken:
            image = draw(DOCUMENTS | arrays((4, 4, 1)))
        else:
            image = draw(st.lists(NUMBERS, min_size=16, max_size=16).map(
                lambda flat: np.asarray(flat, dtype=object).reshape(4, 4, 1).tolist()))
        length = width + draw(st.integers(0, 1)) if "ragged" in broken else width
        other = draw(st.lists(st.integers(-5, 300), min_size=length, max_size=length))
        if "instance" in broken and draw(st.booleans()):
            other = draw(DOCUMENTS)
        return {"image": image, "other": other}

    rows = [instance() for _ in range(count)]
    if "names" in broken and rows:
        row = rows[draw(st.integers(0, len(rows) - 1))]
        row.pop(draw(st.sampled_from(["image", "other"])))
        if draw(st.booleans()):
            row[draw(KEYS)] = draw(DOCUMENTS)
    if draw(st.booleans()):
        columns = {name: [row[name] for row in rows if name in row] for name in ("image", "other")}
        if "form" in broken:
            columns["other"] = columns["other"][1:]
        document = {"inputs": columns}
    else:
        document = {"instances": rows if "form" not in broken else [list(row.values()) for row in rows]}
    if draw(st.booleans()) or "top_k" in broken:
        document["top_k"] = draw(DOCUMENTS | st.integers(-1, 12) if "top_k" in broken else st.integers(1, 3)
                                 | st.fixed_dictionaries({"k": st.integers(1, 3),
                                                          "output": st.sampled_from(["probs", "extra"])}))
    return dumps(document)


@FUZZ
@given(data=st.data())
def test_a_two_input_model_answers_or_refuses_with_a_4xx(data):
    body = data.draw(pair_predict_bodies() | st.builds(dumps, DOCUMENTS))
    with only_api_errors():
        answer = plane(PAIR).tfserving_predict("digits", None, body, "application/json")
        answer = orjson.loads(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))
        if "predictions" in answer:  # several outputs: an object per instance
            assert all(set(row) == {"probs", "extra"} for row in answer["predictions"])
        else:
            assert set(answer["outputs"]) == {"probs", "extra"}


@st.composite
def pair_v2_requests(draw):
    """(body, header): two input tensors, each JSON or binary, in any order, with parts broken."""
    broken = draw(st.sets(st.sampled_from(["name", "missing", "twice", "shape", "datatype", "batch", "blob"]),
                          max_size=2))
    n, width = draw(st.integers(1, SETTINGS.max_instances)), draw(st.integers(1, 3))
    specs = [("image", [n, 4, 4, 1], "FP32", np.float32), ("other", [n + ("batch" in broken), width], "INT32",
                                                                   np.int32)]
    tensors, blobs = [], []
    for name, shape, datatype, dtype in specs:
        if "shape" in broken and draw(st.booleans()):
            shape = draw(st.lists(DIMS, max_size=4))
        count = int(np.prod(shape, dtype=object)) if shape and all(isinstance(d, int) and 0 <= d < 64 for d in shape) else 1
        tensor = {"name": draw(SCALARS) if "name" in broken and draw(st.booleans()) else name, "shape": shape,
                  "datatype": draw(st.sampled_from(sorted(v2.DATATYPES))) if "datatype" in broken else datatype}
        values = np.asarray(draw(st.lists(st.integers(0, 9), min_size=count, max_size=count)), dtype=dtype)
        if draw(st.booleans()):
            blob = values.astype("<" + np.dtype(dtype).str[1:]).tobytes()
            if "blob" in broken:
                blob = blob[:draw(st.integers(0, len(blob)))]
            tensor["parameters"] = {"binary_data_size": values.nbytes}
            blobs.append(blob)
        else:
            tensor["data"] = values.tolist()
        tensors.append(tensor)
    if "missing" in broken:
        tensors.pop(draw(st.integers(0, 1)))
    if "twice" in broken:
        tensors.append(tensors[0])
    order = draw(st.permutations(range(len(tensors))))
    document = {"inputs": [tensors[i] for i in order]}
    if draw(st.booleans()):
        document["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["probs", "extra"])}),
                                            max_size=2))
    head = dumps(document)
    blob = b"".join(blobs)
    return head + blob, str(len(head)) if blob else None


@FUZZ
@given(data=st.data())
def test_v2_infer_on_a_two_input_model_answers_or_refuses_with_a_4xx(data):
    body, header = data.draw(pair_v2_requests())
    with only_api_errors():
        answer, headers = plane(PAIR).infer("digits", None, body, "application/json" if header is None else None,
                                            header)
        head = answer[:int(headers[v2.HEADER])] if v2.HEADER in headers else answer
        assert {t["name"] for t in orjson.loads(head)["outputs"]} <= {"probs", "extra"}


# -- JSON depth: never a recursive parser on a deep document ----------------------------------------
STRUCTURE = st.text(st.sampled_from('[]{}"\\:,0 a'), max_size=400)
STRINGS = st.text(st.sampled_from('[]{}"\\/ u0a'), max_size=6)
TRICKY = st.recursive(STRINGS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(STRINGS, inner, max_size=3), max_leaves=25)


@FUZZ
@given(TRICKY, st.booleans())
def test_json_depth_is_exact_whatever_the_strings_hold(document, ascii_only):
    """Brackets, quotes and backslashes inside strings, escaped or as \\u escapes, never count."""
    body = json.dumps(document, ensure_ascii=ascii_only).encode()
    assert json_depth(body) == reference_depth(document)


@FUZZ
@given(STRUCTURE.map(str.encode) | st.integers(0, 5000).map(lambda n: b"[" * n)
       | st.integers(0, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n))
def test_load_json_never_lets_a_document_deeper_than_the_limit_through(body):
    """Whatever the bytes, a parsed document is never deeper than the limit the scan enforced."""
    with only_api_errors():
        document = load_json(body, SETTINGS.max_json_depth)
        assert reference_depth(document) <= SETTINGS.max_json_depth


# -- images -----------------------------------------------------------------------------------------
SPECS = st.builds(ImageSpec, color_mode=st.sampled_from(["L", "RGB"]),
                  resize=st.sampled_from(["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"]),
                  invert=st.booleans(), channel_order=st.sampled_from(["RGB", "BGR"]))
TARGETS = st.sampled_from([(8, 8, 1), (8, 8), (4, 4, 3), (16, 12, 3), (8, None, 1), (8,), (8, 8, 2)])


@FUZZ
@given(IMAGE_BYTES, SPECS, TARGETS, st.sampled_from([1, 64, 32 * 32, 48 * 48]))
def test_image_decoding_answers_an_instance_or_a_4xx(data, spec, shape, max_pixels):
    with only_api_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of odd files; the server only logs warnings
        instance = image_to_instance(data, spec, shape, max_pixels, "instances[0]")
        assert instance.shape == shape and instance.dtype == np.float32 and np.isfinite(instance).all()


@FUZZ
@given(st.text(max_size=40) | SCALARS
       | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()[:-1]))  # padding cut short
def test_b64_decoding_answers_bytes_or_a_400(value):
    with only_api_errors():
        assert isinstance(decode_b64(value, "instances[0]"), bytes)


@FUZZ
@given(image_files(max_side=80))
def test_an_image_over_the_pixel_limit_is_a_413_and_one_within_it_decodes(data):
    width, height = Image.open(io.BytesIO(data)).size
    spec = ImageSpec(color_mode="L", resize="box")
    try:
        instance = image_to_instance(data, spec, (8, 8, 1), 48 * 48, "instances[0]")
    except ApiError as exc:
        assert width * height > 48 * 48 and exc.status == 413 and "pixels" in exc.message
    else:
        assert width * height <= 48 * 48 and instance.shape == (8, 8, 1)


def test_a_deep_v2_document_is_a_400_naming_the_depth():
    """The JSON part of a binary request is scanned like any other body."""
    head = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    body = head + b"\0" * 256
    with pytest.raises(ApiError, match="nesting depth 100001") as raised:
        plane(RUNTIMES[0]).infer("digits", None, body, None, str(len(head)))
    assert raised.value.status == 400
