"""Every bad input gets a 4xx with {"error": "..."} naming the problem: never a 500, never a dead worker.

One corpus, run through a real gunicorn over HTTP and through the in-process app.
"""
import base64
import gzip
import io
import struct
import zlib

import numpy as np
import orjson
import pytest
from PIL import Image

JSON = {"Content-Type": "application/json"}
DIGIT = np.zeros((8, 8, 1)).tolist()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_bytes(fmt: str, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size).save(buffer, fmt)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A tiny file that claims width x height pixels: the header alone must be enough to refuse it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16)  # a few rows; never decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def predict(document) -> bytes:
    return orjson.dumps(document)


def v2_json(tensor: dict, **extra) -> bytes:
    base = {"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": [0.0] * 64}
    return orjson.dumps({"inputs": [{**base, **tensor}], **extra})


def v2_binary(json_tensor: dict, blob: bytes, header_length=None):
    head = v2_json({k: v for k, v in json_tensor.items()}, )
    head = orjson.loads(head)
    head["inputs"][0].pop("data")
    head = orjson.dumps(head)
    return head + blob, {"Inference-Header-Content-Length": str(header_length or len(head))}


FLOATS = np.zeros(64, dtype="<f4").tobytes()
BIN_OK = {"parameters": {"binary_data_size": 256}}

# (id, method, path, body, headers, status, words the error must contain)
CASES = [
    ("malformed-json", "POST", "/predict", b'{"instances": [1,', JSON, 400, "malformed JSON"),
    ("nan-literal", "POST", "/predict", b'{"instances": [NaN]}', JSON, 400, "malformed JSON"),
    ("infinity-literal", "POST", "/predict", b'{"instances": [[1e999]]}', JSON, 400, "infinity"),
    ("empty-body", "POST", "/predict", b"", JSON, 400, "empty"),
    ("top-level-array", "POST", "/predict", b"[1, 2]", JSON, 400, "JSON object"),
    ("text-plain", "POST", "/predict", predict({"instances": [DIGIT]}), {"Content-Type": "text/plain"}, 415,
     "Content-Type"),
    ("form-encoded", "POST", "/predict", predict({"instances": [DIGIT]}),
     {"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
    ("missing-keys", "POST", "/predict", predict({}), JSON, 400, "exactly one of"),
    ("conflicting-keys", "POST", "/predict", predict({"instances": [DIGIT], "inputs": [DIGIT]}), JSON, 400,
     "exactly one of"),
    ("unknown-key", "POST", "/predict", predict({"instance": [DIGIT]}), JSON, 400, "unknown key"),
    ("instances-not-list", "POST", "/predict", predict({"instances": 3}), JSON, 400, "must be a list"),
    ("empty-instances", "POST", "/predict", predict({"instances": []}), JSON, 400, "empty"),
    ("empty-tensor", "POST", "/predict", predict({"instances": [[]]}), JSON, 400, "shape"),
    ("ragged", "POST", "/predict", predict({"instances": [DIGIT, DIGIT[:7]]}), JSON, 400, "ragged"),
    ("wrong-shape", "POST", "/predict", predict({"instances": [[[1.0] * 8] * 8]}), JSON, 400,
     "shape [8, 8]; the model takes [8, 8, 1]"),
    ("scalar-instances", "POST", "/predict", predict({"instances": [1, 2]}), JSON, 400, "shape"),
    ("strings", "POST", "/predict", predict({"instances": [[["a"] * 8] * 8]}), JSON, 400, "strings"),
    ("booleans", "POST", "/predict", predict({"instances": [[[[True]] * 8] * 8]}), JSON, 400, "booleans"),
    ("a-boolean-among-numbers", "POST", "/predict",
     predict({"instances": [[[[0.5]] * 8] * 7 + [[[True]] + [[0.5]] * 7]]}), JSON, 400, "booleans"),
    ("nulls", "POST", "/predict", predict({"instances": [[[[None]] * 8] * 8]}), JSON, 400, "non-numbers"),
    ("over-float32-range", "POST", "/predict", predict({"instances": [[[[1e39]] * 8] * 8]}), JSON, 400,
     "out of the range of float32"),
    # values of the wrong type or out of the dtype's range name the input (the digits model's `image`, float32)
    ("strings-name-the-input", "POST", "/predict", predict({"instances": [[["a"] * 8] * 8]}), JSON, 400,
     "holds strings; expected an array of numbers (input 'image' takes float32)"),
    ("booleans-name-the-input", "POST", "/predict", predict({"instances": [[[[True]] * 8] * 8]}), JSON, 400,
     "holds booleans; expected numbers (input 'image' takes float32)"),
    ("over-float32-range-names-the-input", "POST", "/predict", predict({"inputs": [[[[-1e39]] * 8] * 8]}), JSON,
     400, "'inputs' holds values out of the range of float32 (input 'image' takes float32)"),
    ("named-instance-strings", "POST", "/predict", predict({"instances": [{"image": [["x"] * 8] * 8}]}), JSON,
     400, "instances[0] holds strings; expected an array of numbers (input 'image' takes float32)"),
    ("b64-inside-a-tensor", "POST", "/predict", predict({"instances": [[[{"b64": "AA=="}]] * 8]}), JSON, 400,
     "non-numbers"),
    ("missing-input-name", "POST", "/predict", predict({"inputs": {}}), JSON, 400,
     "missing input(s) ['image']; this model's input is 'image'"),
    ("unknown-and-missing-input-names", "POST", "/predict", predict({"instances": [{"pixels": DIGIT}]}), JSON,
     400, "missing input(s) ['image'] and unknown input name(s) ['pixels']"),
    ("nesting-5000-deep", "POST", "/predict", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, 400,
     "nesting depth"),
    ("too-many-instances", "POST", "/predict", predict({"instances": [DIGIT] * 257}), JSON, 400,
     "257 instances, over the limit of 256"),
    ("body-over-limit", "POST", "/predict", b'{"instances": [' + b" " * (9 * 1024 * 1024) + b"]}", JSON, 413,
     "over the limit"),
    ("gzip-bomb", "POST", "/predict", gzip.compress(b'{"instances": [' + b" " * (64 << 20) + b"]}"),
     {**JSON, "Content-Encoding": "gzip"}, 413, "over the limit of 8388608 bytes once decoded (gzip)"),
    ("unknown-content-coding", "POST", "/predict", predict({"instances": [DIGIT]}),
     {**JSON, "Content-Encoding": "br"}, 415, "unsupported Content-Encoding 'br'"),
    ("not-gzip-at-all", "POST", "/predict", predict({"instances": [DIGIT]}),
     {**JSON, "Content-Encoding": "gzip"}, 400, "request body is not valid gzip"),
    ("invalid-base64", "POST", "/predict", predict({"instances": [{"b64": "not base64!"}]}), JSON, 400,
     "invalid base64"),
    ("b64-not-string", "POST", "/predict", predict({"instances": [{"b64": 12}]}), JSON, 400, "base64 string"),
    ("not-an-image", "POST", "/predict", predict({"instances": [{"b64": b64(b"hello world")}]}), JSON, 400,
     "not a PNG or JPEG"),
    ("gif-image", "POST", "/predict", predict({"instances": [{"b64": b64(image_bytes("GIF"))}]}), JSON, 400,
     "not a PNG or JPEG"),
    ("truncated-png", "POST", "/predict", predict({"instances": [{"b64": b64(image_bytes("PNG", (64, 64))[:60])}]}),
     JSON, 400, "image"),
    ("decompression-bomb", "POST", "/predict", predict({"instances": [{"b64": b64(png_bomb(50_000, 50_000))}]}),
     JSON, 413, "pixels"),
    ("object-instance-keys", "POST", "/predict", predict({"instances": [{"b64": "", "x": 1}]}), JSON, 400,
     "unknown input name"),
    ("wrong-input-name", "POST", "/predict", predict({"instances": [{"pixels": DIGIT}]}), JSON, 400,
     "this model's input is 'image'"),
    ("top-k-zero", "POST", "/predict", predict({"instances": [DIGIT], "top_k": 0}), JSON, 400, "top_k"),
    ("top-k-string", "POST", "/predict", predict({"instances": [DIGIT], "top_k": "3"}), JSON, 400, "top_k"),
    ("top-k-bool", "POST", "/predict", predict({"instances": [DIGIT], "top_k": True}), JSON, 400, "top_k"),
    ("top-k-over-limit", "POST", "/predict", predict({"instances": [DIGIT], "top_k": 101}), JSON, 400, "top_k"),
    ("top-k-over-classes", "POST", "/predict", predict({"instances": [DIGIT], "top_k": 11}), JSON, 400,
     "10 classes"),
    ("unknown-signature", "POST", "/predict", predict({"instances": [DIGIT], "signature_name": "x"}), JSON, 400,
     "signature_name"),
    ("unknown-model", "POST", "/v1/models/nope:predict", predict({"instances": [DIGIT]}), JSON, 404, "'nope'"),
    ("unknown-version", "POST", "/v1/models/digits/versions/9:predict", predict({"instances": [DIGIT]}), JSON,
     404, "no version 9"),
    ("unknown-model-status", "GET", "/v1/models/nope", None, {}, 404, "'nope'"),
    ("unknown-version-metadata", "GET", "/v1/models/digits/versions/7/metadata", None, {}, 404, "no version 7"),
    ("unknown-route", "GET", "/v3/anything", None, {}, 404, "no such route"),
    ("get-on-predict", "GET", "/predict", None, {}, 405, "allowed: "),
    ("delete-model", "DELETE", "/v1/models/digits", None, {}, 405, "allowed: "),
    # KServe v2
    ("v2-malformed-json", "POST", "/v2/models/digits/infer", b"{", JSON, 400, "malformed JSON"),
    ("v2-no-inputs", "POST", "/v2/models/digits/infer", b"{}", JSON, 400, "'inputs'"),
    ("v2-wrong-input-name", "POST", "/v2/models/digits/infer", v2_json({"name": "x"}), JSON, 400, "unknown input"),
    ("v2-wrong-datatype", "POST", "/v2/models/digits/infer", v2_json({"datatype": "INT64"}), JSON, 400,
     "datatype 'INT64'"),
    ("v2-data-shape-mismatch", "POST", "/v2/models/digits/infer", v2_json({"data": [0.0] * 63}), JSON, 400,
     "63 values"),
    ("v2-wrong-shape", "POST", "/v2/models/digits/infer", v2_json({"shape": [1, 64], "data": [0.0] * 64}), JSON,
     400, "shape"),
    ("v2-zero-batch", "POST", "/v2/models/digits/infer", v2_json({"shape": [0, 8, 8, 1], "data": []}), JSON, 400,
     "batch dimension"),
    ("v2-negative-dim", "POST", "/v2/models/digits/infer", v2_json({"shape": [-1, 8, 8, 1]}), JSON, 400,
     "non-negative"),
    ("v2-overflowing-shape", "POST", "/v2/models/digits/infer", v2_json({"shape": [2**40, 2**40, 8, 1]}), JSON,
     413, "elements"),
    ("v2-strings-in-data", "POST", "/v2/models/digits/infer", v2_json({"data": ["a"] * 64}), JSON, 400, "strings"),
    ("v2-over-float32-range", "POST", "/v2/models/digits/infer", v2_json({"data": [1e39] * 64}), JSON, 400,
     "input 'image' data holds values out of the range of float32"),
    ("v2-booleans-in-data", "POST", "/v2/models/digits/infer", v2_json({"data": [True] * 64}), JSON, 400,
     "input 'image' data holds booleans"),
    ("v2-bytes-for-a-float-input", "POST", "/v2/models/digits/infer",
     v2_json({"datatype": "BYTES", "data": ["a"] * 64}), JSON, 400, "datatype 'BYTES' does not match the model's FP32"),
    ("v2-binary-bytes-for-a-float-input", "POST", "/v2/models/digits/infer",
     *v2_binary({"datatype": "BYTES", "parameters": {"binary_data_size": 5}}, b"\x01\x00\x00\x00a"), 400,
     "datatype 'BYTES' does not match the model's FP32"),
    ("v2-missing-input-name", "POST", "/v2/models/digits/infer", v2_json({"name": None}), JSON, 400,
     "unknown input None; the model's input is 'image'"),
    ("v2-no-data", "POST", "/v2/models/digits/infer", v2_json({"data": None}).replace(b',"data":null', b""),
     JSON, 400, "neither 'data'"),
    ("v2-unknown-output", "POST", "/v2/models/digits/infer", v2_json({}, outputs=[{"name": "nope"}]), JSON, 400,
     "unknown output"),
    ("v2-text-plain", "POST", "/v2/models/digits/infer", v2_json({}), {"Content-Type": "text/plain"}, 415,
     "Content-Type"),
    ("v2-binary-size-mismatch", "POST", "/v2/models/digits/infer",
     *v2_binary({"parameters": {"binary_data_size": 200}}, FLOATS[:200]), 400, "does not match 64 elements"),
    ("v2-binary-size-beyond-body", "POST", "/v2/models/digits/infer", *v2_binary(BIN_OK, FLOATS[:100]), 400,
     "more than the 100 bytes"),
    ("v2-binary-unclaimed-bytes", "POST", "/v2/models/digits/infer", *v2_binary(BIN_OK, FLOATS + b"\0" * 8), 400,
     "8 bytes no input claims"),
    ("v2-binary-nan", "POST", "/v2/models/digits/infer",
     *v2_binary(BIN_OK, np.full(64, np.nan, dtype="<f4").tobytes()), 400, "NaN"),
    ("v2-header-length-beyond-body", "POST", "/v2/models/digits/infer",
     *v2_binary(BIN_OK, FLOATS, header_length=10**6), 400, "Inference-Header-Content-Length"),
    ("v2-header-length-not-number", "POST", "/v2/models/digits/infer",
     v2_json({}), {**JSON, "Inference-Header-Content-Length": "abc"}, 400, "Inference-Header-Content-Length"),
    ("v2-unknown-model", "POST", "/v2/models/nope/infer", v2_json({}), JSON, 404, "'nope'"),
    ("v2-unknown-model-ready", "GET", "/v2/models/nope/ready", None, {}, 404, "'nope'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_4xx_json_error_naming_the_problem(http, case):
    _, method, path, body, headers, status, words = case
    answer = http.request(method, path, body=body, headers=headers)
    assert answer.status == status, answer.body[:300]
    assert answer.headers["Content-Type"].startswith("application/json")
    document = answer.json
    assert set(document) == {"error"}
    assert words in document["error"]


def test_a_corpus_run_leaves_every_worker_alive_and_logs_no_500(server):
    """Runs after the corpus above (pytest keeps file order): the same workers, no error trace."""
    before = server.worker_pids()
    for case in CASES:
        _, method, path, body, headers, _, _ = case
        import requests
        requests.request(method, server.url + path, data=body, headers=headers, timeout=30)
    assert server.worker_pids() == before
    log = server.log()
    assert "Traceback" not in log
    assert '"status":500' not in log and "WORKER TIMEOUT" not in log and "was sent SIG" not in log
