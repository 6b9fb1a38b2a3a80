"""Every configured limit from both sides, on the real stack (nginx + gunicorn, two workers).

At the limit a request is answered 200 with the same numbers a small request gets; one step over, it
is refused with its own 4xx and a JSON error naming the limit. Small limits keep the bodies cheap;
3 MiB of body leaves room for the million-deep documents, which must be refused quickly without
anything recursing. The body limit is checked through nginx and on gunicorn's own socket, since both
enforce it. The last test proves no worker died and nothing logged a trace.
"""
import base64
import http.client
import io
import json
import socket
import time

import numpy as np
import orjson
import pytest
from PIL import Image

from tests.conftest import WORDS
from tests.servers import Stack, running

MIB = 1024 * 1024
DIGIT_VALUES = 8 * 8 * 1  # digits takes [8, 8, 1] per instance
SIDE = 32  # of the largest square image
BODY, INSTANCES, ELEMENTS, DEPTH, PIXELS = 3 * MIB, 16, 16 * DIGIT_VALUES, 6, SIDE * SIDE
LIMITS = dict(max_body_bytes=BODY, max_instances=INSTANCES, max_tensor_elements=ELEMENTS,
              max_json_depth=DEPTH, max_image_pixels=PIXELS, max_top_k=5)
TF_ROUTES = ["/predict", "/v1/models/digits:predict"]
V2 = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def limited(store, tmp_path_factory):
    with running(Stack(tmp_path_factory.mktemp("limits"), model_store=store, workers=2, threads=4,
                       **LIMITS)) as stack:
        stack.first_pids = stack.worker_pids()
        yield stack


class Answer:
    def __init__(self, status: int, headers, body: bytes, seconds: float):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds

    @property
    def json(self):
        return orjson.loads(self.body)


def connect(address, timeout: float = 30) -> socket.socket:
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(address))
    return sock


def exchange(address, method: str, path: str, body: bytes = b"", headers: dict | None = None,
             chunked: bool = False, timeout: float = 30) -> Answer:
    """One request on its own connection, to nginx ((host, port)) or to gunicorn's unix socket (a path).

    Raw bytes on a socket, so that header values may be any latin-1 byte, and so that an answer sent
    before the whole body was read (a 413) is still read after the server stopped taking the body.
    """
    sock = connect(address, timeout)
    headers = {"Host": "localhost", "Content-Type": "application/json", **(headers or {})}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        piece = 64 * 1024
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
                           for i in range(0, len(body), piece)) + b"0\r\n\r\n"
    else:
        headers["Content-Length"] = str(len(body))
        payload = body
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    started = time.monotonic()
    try:
        try:
            sock.sendall(head.encode("latin-1") + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before taking the whole body: read that answer
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
        return Answer(response.status, response.headers, data, time.monotonic() - started)
    finally:
        sock.close()


def doors(stack) -> dict:
    return {"nginx": ("127.0.0.1", stack.port), "gunicorn": stack.run_dir / "gunicorn.sock"}


def refused(answer: Answer, status: int, *words: str) -> str:
    """The answer is `status` with a JSON body {"error": ...} holding every one of `words`."""
    assert answer.status == status, answer.body[:300]
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers
    document = answer.json
    assert set(document) == {"error"}, document
    for word in words:
        assert word in document["error"], document["error"]
    return document["error"]


# -- request bodies -------------------------------------------------------------------------------
def tf_body(instances, key="instances", named=False, **extra) -> bytes:
    values = {"image": instances} if named else instances
    return orjson.dumps({key: values, **extra})


def v2_json(batch: np.ndarray, shape=None, **extra) -> bytes:
    tensor = {"name": "image", "shape": list(batch.shape if shape is None else shape), "datatype": "FP32",
              "data": np.asarray(batch, dtype=np.float32).reshape(-1).tolist()}
    return orjson.dumps({"inputs": [tensor], **extra})


def v2_binary(batch: np.ndarray, shape=None, size=None, pad: int = 0, **extra) -> tuple[bytes, dict]:
    """JSON header (padded with `pad` spaces) then little-endian floats; and the length header."""
    blob = np.ascontiguousarray(batch, dtype="<f4").tobytes()
    tensor = {"name": "image", "shape": list(batch.shape if shape is None else shape), "datatype": "FP32",
              "parameters": {"binary_data_size": len(blob) if size is None else size}}
    head = json.dumps({"inputs": [tensor], **extra}).encode() + b" " * pad  # json: shapes beyond 64 bits
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def padded(body: bytes, length: int) -> bytes:
    """The same JSON document, grown to exactly `length` bytes with whitespace before its last brace."""
    assert body.endswith(b"}") and len(body) <= length
    return body[:-1] + b" " * (length - len(body)) + b"}"


def image_b64(digit: np.ndarray, width: int, height: int, fmt: str = "PNG") -> str:
    """A digit as a grey width x height image file (nearest upscaling, so box downscaling restores it)."""
    grey = Image.fromarray(np.round(digit.squeeze() * 255).astype("uint8"), mode="L")
    grey = grey.resize((width, height), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    grey.save(buffer, fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    return base64.b64encode(buffer.getvalue()).decode()


def scores_of(answer: Answer, path: str):
    if path == V2:
        return v2_outputs(answer)
    return answer.json["predictions"] if "predictions" in answer.json else answer.json["outputs"]


def v2_outputs(answer: Answer) -> np.ndarray:
    if "Inference-Header-Content-Length" in answer.headers:
        length = int(answer.headers["Inference-Header-Content-Length"])
        (output,) = orjson.loads(answer.body[:length])["outputs"]
        return np.frombuffer(answer.body[length:], dtype="<f4").reshape(output["shape"])
    (output,) = answer.json["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


@pytest.fixture(scope="module")
def sixteen(digits):
    """INSTANCES held-out digits as [16, 8, 8, 1] float32, and their labels."""
    x, y = digits
    return x[:INSTANCES].astype(np.float32), y[:INSTANCES]


@pytest.fixture(scope="module")
def reference(limited, sixteen):
    """The scores of the sixteen digits asked four at a time: well under every limit."""
    batch, labels = sixteen
    rows = []
    for start in range(0, INSTANCES, 4):
        body = tf_body(batch[start:start + 4].tolist())
        answer = exchange(doors(limited)["nginx"], "POST", "/predict", body)
        assert answer.status == 200, answer.body
        rows += answer.json["predictions"]
    scores = np.asarray(rows)
    assert (scores.argmax(axis=1) == labels).mean() >= 0.9  # the model itself works
    return scores


def same_scores(got, reference) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == reference.shape
    assert np.allclose(got, reference, atol=1e-5)


# -- body size: nginx and gunicorn both enforce max_body_bytes, with a Content-Length or chunked ----
def at_limit_bodies(batch: np.ndarray) -> dict:
    """(path, body, extra headers) of exactly BODY bytes per route family, each a valid request."""
    return {
        "predict": ("/predict", padded(tf_body(batch.tolist()), BODY), {}),
        "tfserving": ("/v1/models/digits:predict", padded(tf_body(batch.tolist(), key="inputs"), BODY), {}),
        "v2-json": (V2, padded(v2_json(batch), BODY), {}),
        "v2-binary": (V2, *v2_binary(batch, pad=BODY - len(v2_binary(batch)[0]))),  # the JSON part padded
    }


ROUTE_FAMILIES = ["predict", "tfserving", "v2-json", "v2-binary"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("door", ["nginx", "gunicorn"])
@pytest.mark.parametrize("family", ROUTE_FAMILIES)
def test_a_body_of_exactly_the_limit_is_served(limited, sixteen, reference, door, family, chunked):
    path, body, headers = at_limit_bodies(sixteen[0])[family]
    assert len(body) == BODY
    answer = exchange(doors(limited)[door], "POST", path, body, headers, chunked=chunked)
    assert answer.status == 200, answer.body[:300]
    same_scores(scores_of(answer, path), reference)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("door", ["nginx", "gunicorn"])
@pytest.mark.parametrize("family", ROUTE_FAMILIES)
def test_one_byte_over_the_body_limit_is_a_json_413(limited, sixteen, door, family, chunked):
    path, body, headers = at_limit_bodies(sixteen[0])[family]
    body = body[:-1] + b" " + body[-1:]  # still a valid request, one byte longer
    assert len(body) == BODY + 1
    answer = exchange(doors(limited)[door], "POST", path, body, headers, chunked=chunked)
    refused(answer, 413, f"over the limit of {BODY} bytes")


@pytest.mark.parametrize("door", ["nginx", "gunicorn"])
def test_a_body_claiming_more_than_the_limit_is_refused_before_it_is_sent(limited, door):
    """Both answer from the Content-Length alone: the client need not send the body."""
    with connect(doors(limited)[door], timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n{" % (10 * BODY))
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        answer = Answer(response.status, response.headers, response.read(), 0)
    refused(answer, 413, f"over the limit of {BODY} bytes")


# -- instances ------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["rows", "columns", "named-rows", "named-columns"])
@pytest.mark.parametrize("path", TF_ROUTES)
def test_instances_at_the_limit_are_served_and_one_more_is_a_400(limited, sixteen, reference, path, form):
    batch = sixteen[0]
    key = "instances" if "rows" in form else "inputs"
    if form == "named-rows":
        make = lambda rows: orjson.dumps({"instances": [{"image": row} for row in rows]})  # noqa: E731
    else:
        make = lambda rows: tf_body(rows, key=key, named=form == "named-columns")  # noqa: E731
    nginx = doors(limited)["nginx"]
    answer = exchange(nginx, "POST", path, make(batch.tolist()))
    assert answer.status == 200, answer.body[:300]
    same_scores(answer.json["predictions" if key == "instances" else "outputs"], reference)
    over = exchange(nginx, "POST", path, make(batch.tolist() + batch[:1].tolist()))
    refused(over, 400, f"'{key}' has {INSTANCES + 1} instances, over the limit of {INSTANCES}")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_instances_at_the_limit_are_served_and_one_more_is_refused(limited, sixteen, reference, binary):
    """Seventeen digits are over both limits at once: the element count, checked first, answers 413.
    A batch of seventeen tiny instances is over the instance limit alone: 400."""
    batch = sixteen[0]
    nginx = doors(limited)["nginx"]

    def send(array, shape=None):
        if binary:
            body, headers = v2_binary(array, shape)
            return exchange(nginx, "POST", V2, body, headers)
        return exchange(nginx, "POST", V2, v2_json(array, shape))

    answer = send(batch)
    assert answer.status == 200, answer.body[:300]
    same_scores(v2_outputs(answer), reference)
    refused(send(np.concatenate([batch, batch[:1]])), 413,
            f"{(INSTANCES + 1) * DIGIT_VALUES} elements, over the limit of {ELEMENTS}")
    refused(send(np.zeros((INSTANCES + 1, 1))), 400,
            f"{INSTANCES + 1} instances, over the limit of {INSTANCES}")


# -- tensor elements --------------------------------------------------------------------------------
def test_elements_at_the_limit_are_served_everywhere(limited, sixteen, reference):
    """16 digits of 64 values: exactly max_tensor_elements, on every route (the tests above send it too)."""
    batch = sixteen[0]
    assert batch.size == ELEMENTS
    nginx = doors(limited)["nginx"]
    for path, body, headers in [("/predict", tf_body(batch.tolist()), {}), (V2, v2_json(batch), {}),
                                (V2, *v2_binary(batch))]:
        answer = exchange(nginx, "POST", path, body, headers)
        assert answer.status == 200, answer.body[:300]
        same_scores(answer.json["predictions"] if path != V2 else v2_outputs(answer), reference)


WIDE = np.zeros((1, 8, 8, 17), dtype=np.float32)  # one instance, 1088 values: over the element limit alone


@pytest.mark.parametrize("path, body, headers, what", [
    ("/predict", tf_body(WIDE.tolist()), {}, "'instances' has 1088 elements"),
    ("/v1/models/digits:predict", tf_body(WIDE.tolist(), key="inputs"), {}, "'inputs' has 1088 elements"),
    ("/predict", orjson.dumps({"instances": [{"image": WIDE[0].tolist()}]}), {},
     "instances[0] has 1088 elements"),
    (V2, v2_json(WIDE), {}, "input 'image' has 1088 elements"),
    (V2, *v2_binary(WIDE), "input 'image' has 1088 elements"),
], ids=["predict", "tfserving-columnar", "named-instance", "v2-json", "v2-binary"])
def test_one_instance_over_the_element_limit_is_a_413(limited, path, body, headers, what):
    answer = exchange(doors(limited)["nginx"], "POST", path, body, headers)
    refused(answer, 413, what, f"over the limit of {ELEMENTS}")


ONE = np.zeros((1, 8, 8, 1), dtype=np.float32)


@pytest.mark.parametrize("shape, status, words", [
    ([2**31, 2**31], 413, f"{2**62} elements"),
    ([2**31, 2**31, 8, 1], 413, f"{2**65} elements"),
    ([2**32, 2**32], 413, f"{2**64} elements"),  # the product overflows int64: counted exactly
    ([2**63, 1, 1, 1], 413, f"{2**63} elements"),
    ([2**64 - 1, 8, 8, 1], 413, "elements"),
    ([1, 8, 8, 2**63], 413, "elements"),
    ([2**64, 8, 8, 1], 400, "non-negative integers"),  # orjson reads it as a float
    ([-1, 8, 8, 1], 400, "non-negative integers"),
    ([1, 8, -8, -1], 400, "non-negative integers"),
    ([1.0, 8, 8, 1], 400, "non-negative integers"),
    ([True, 8, 8, 1], 400, "non-negative integers"),
    ([0, 8, 8, 1], 400, "batch dimension"),
    ([], 400, "batch dimension"),
    ([1, 0, 2**63], 400, "instances of shape [0, 9223372036854775808]"),  # no elements, absurd dimensions
    ([1, 8, 8, 0], 400, "instances of shape [8, 8, 0]"),
    ([1] * 65, 400, "instances of shape [1, 1,"),  # beyond numpy's 64 dimensions
    ([1, 64], 400, "instances of shape [64]; the model takes [8, 8, 1]"),
], ids=lambda v: str(v)[:40] if isinstance(v, list) else None)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_shapes_claiming_absurd_sizes_are_refused(limited, shape, status, words, binary):
    if binary:
        body, headers = v2_binary(ONE, shape=shape)
    else:
        body, headers = json.dumps({"inputs": [{"name": "image", "shape": shape, "datatype": "FP32",
                                                "data": [0.0] * 64}]}).encode(), {}
    answer = exchange(doors(limited)["nginx"], "POST", V2, body, headers)
    refused(answer, status, words)


BLOB = 64 * 4
LENGTH = "Inference-Header-Content-Length"


def with_length(value: str):
    """A valid binary request with its length header replaced."""
    return v2_binary(ONE)[0], {LENGTH: value}



@pytest.mark.parametrize("make, words", [
    (lambda: v2_binary(ONE, size=BLOB - 1), "does not match 64 elements"),
    (lambda: v2_binary(ONE, size=BLOB + 1), f"{BLOB + 1} is more than the {BLOB} bytes"),
    (lambda: v2_binary(ONE, size=2**63), "is more than the"),
    (lambda: v2_binary(ONE, size=-1), "non-negative integer"),
    (lambda: v2_binary(ONE, size="256"), "non-negative integer"),
    (lambda: (v2_binary(ONE)[0] + b"\0\0\0\0", v2_binary(ONE)[1]), "4 bytes no input claims"),
    (lambda: (v2_binary(ONE)[0][:-4], v2_binary(ONE)[1]), f"{BLOB} is more than the {BLOB - 4} bytes"),
    (lambda: with_length("0"), LENGTH),
    (lambda: with_length(str(10**6)), LENGTH),
    (lambda: with_length("-5"), LENGTH),
    (lambda: with_length("\xb2"), LENGTH),  # '²' to str.isdigit(), not to int()
    (lambda: with_length("1\xb3"), LENGTH),
    (lambda: with_length("9" * 5000), LENGTH),  # over int()'s 4300 digits
    (lambda: with_length("40"), "malformed JSON"),  # cuts the JSON short
], ids=["size-short", "size-beyond-body", "size-2**63", "size-negative", "size-string", "unclaimed-bytes",
        "body-short", "header-zero", "header-beyond-body", "header-negative", "header-superscript-two",
        "header-superscript-three", "header-5000-digits", "header-inside-json"])
def test_v2_binary_lengths_that_disagree_are_a_400(limited, make, words):
    body, headers = make()
    for door, address in doors(limited).items():
        refused(exchange(address, "POST", V2, body, headers), 400, words)


# -- pixels -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("path", [*TF_ROUTES, "/v1/models/digits/versions/1:predict"])
def test_an_image_of_exactly_the_pixel_limit_is_served_and_one_more_row_or_column_is_a_413(
        limited, sixteen, reference, path, fmt):
    batch, _ = sixteen
    nginx = doors(limited)["nginx"]
    answer = exchange(nginx, "POST", path, orjson.dumps({"instances": [{"b64": image_b64(d, SIDE, SIDE, fmt)}
                                                                       for d in batch[:4]]}))
    assert answer.status == 200, answer.body[:300]
    scores = np.asarray(answer.json["predictions"])
    assert (scores.argmax(axis=1) == reference[:4].argmax(axis=1)).all()  # the same digits, seen as images
    assert np.allclose(scores, reference[:4], atol=0.05 if fmt == "JPEG" else 1e-2)
    for width, height in [(SIDE + 1, SIDE), (SIDE, SIDE + 1), (PIXELS + 1, 1)]:
        body = orjson.dumps({"instances": [{"b64": image_b64(batch[0], SIDE, SIDE, fmt)},
                                           {"b64": image_b64(batch[1], width, height, fmt)}]})
        refused(exchange(nginx, "POST", path, body), 413, "instances[1]",
                f"{width}x{height} = {width * height} pixels, over the limit of {PIXELS}")


# -- top_k ------------------------------------------------------------------------------------------
def test_top_k_at_its_limit_is_served_and_one_more_is_a_400(limited, sixteen, reference):
    batch, _ = sixteen
    nginx = doors(limited)["nginx"]
    answer = exchange(nginx, "POST", "/predict", tf_body(batch[:2].tolist(), top_k=5))
    assert answer.status == 200, answer.body[:300]
    for best, scores in zip(answer.json["top_k"], reference[:2]):
        best_five = np.argsort(-scores, kind="stable")[:5]
        assert [entry["label"] for entry in best] == [WORDS[i] for i in best_five]  # newest version's labels
    refused(exchange(nginx, "POST", "/predict", tf_body(batch[:2].tolist(), top_k=6)), 400,
            "top_k must be an integer from 1 to 5")


# -- JSON nesting depth -----------------------------------------------------------------------------
def nest(value, levels: int):
    for _ in range(levels):
        value = [value]
    return value


def v2_with_parameters(depth: int, binary: bool, batch: np.ndarray):
    """A valid v2 request whose JSON is exactly `depth` deep: padding nested under 'parameters'."""
    extra = {"parameters": {"padding": nest([], depth - 3)}}  # {} 1, parameters 2, lists from 3 on
    if binary:
        return v2_binary(batch, **extra)
    return v2_json(batch, **extra), {}


def depth_cases(batch: np.ndarray):
    """(route, body, headers) exactly DEPTH deep and one level deeper, per route family."""
    digit = batch[0].tolist()  # 3 levels: [8][8][1]
    cases = {
        # {"instances": [{"image": digit}]}: object, list, object, then the digit's three levels.
        "predict": ("/predict", lambda d: orjson.dumps({"instances": [{"image": nest(digit, d - 6)}]})),
        # {"inputs": {"image": [digit]}}: object, object, list, then three.
        "tfserving": ("/v1/models/digits:predict",
                      lambda d: orjson.dumps({"inputs": {"image": nest([digit], d - 6)}})),
    }
    out = []
    for family, (path, make) in cases.items():
        for depth in (DEPTH, DEPTH + 1):
            out.append((family, depth, path, make(depth), {}))
    for binary in (False, True):
        for depth in (DEPTH, DEPTH + 1):
            family = "v2-binary" if binary else "v2-json"
            out.append((family, depth, V2, *v2_with_parameters(depth, binary, batch[:1])))
    return out


def test_json_as_deep_as_the_limit_is_served_and_one_level_deeper_is_a_400(limited, sixteen, reference):
    batch, _ = sixteen
    for family, depth, path, body, headers in depth_cases(batch):
        answer = exchange(doors(limited)["nginx"], "POST", path, body, headers)
        if depth == DEPTH:
            assert answer.status == 200, (family, answer.body[:300])
            same_scores(scores_of(answer, path), reference[:1])
        else:
            refused(answer, 400, f"JSON nesting depth {DEPTH + 1} is over the limit of {DEPTH}")


def test_v2_data_nested_by_shape_is_one_level_too_deep_for_this_stack(limited, sixteen):
    """[1, 8, 8, 1] nested in 'data' is 7 deep: a client sending nested data meets the depth limit."""
    nested = orjson.dumps({"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32",
                                       "data": sixteen[0][:1].tolist()}]})
    refused(exchange(doors(limited)["nginx"], "POST", V2, nested), 400, "depth 7 is over the limit of 6")


def deep_bodies(levels: int) -> dict:
    """(path, body, headers) per kind of deep document, `levels` deep."""
    return {
        "brackets-only": ("/predict", b"[" * levels, {}),
        "balanced": ("/predict", b"[" * levels + b"]" * levels, {}),
        "objects": ("/predict", b'{"":' * levels + b"1" + b"}" * levels, {}),  # 5 MB at 1M: not sent
        "in-instances": ("/v1/models/digits:predict",
                         b'{"instances": ' + b"[" * levels + b"]" * levels + b"}", {}),
        "v2-json": (V2, b'{"inputs": [{"name": "image", "data": ' + b"[" * levels + b"]" * levels + b"}]}",
                    {}),
        "v2-binary-header": (V2, b'{"parameters": ' + b"[" * levels + b"]" * levels + b"}" + b"\0" * 256,
                             {"Inference-Header-Content-Length": str(len(b'{"parameters": }') + 2 * levels)}),
    }


DEEP = [(levels, shape) for levels in (100, 10_000, 1_000_000) for shape in deep_bodies(1)
        if len(deep_bodies(levels)[shape][1]) <= BODY]


@pytest.mark.parametrize("levels, shape", DEEP, ids=[f"{levels}-deep-{shape}" for levels, shape in DEEP])
@pytest.mark.parametrize("door", ["nginx", "gunicorn"])
def test_deep_nesting_is_a_quick_400_that_never_recurses(limited, door, levels, shape):
    path, body, headers = deep_bodies(levels)[shape]
    answer = exchange(doors(limited)[door], "POST", path, body, headers)
    deepest = levels + {"in-instances": 1, "v2-binary-header": 1, "v2-json": 3}.get(shape, 0)
    refused(answer, 400, f"JSON nesting depth {deepest} is over the limit of {DEPTH}")
    assert answer.seconds < 3.0, answer.seconds


# -- afterwards -------------------------------------------------------------------------------------
def test_no_worker_died_and_nothing_recursed_or_raised(limited):
    """Runs last (pytest keeps file order): the same two workers, and a log without a trace."""
    assert limited.worker_pids() == limited.first_pids
    assert limited.ready_pids() == limited.first_pids
    log = limited.log()
    for sign in ("RecursionError", "maximum recursion depth", "Traceback", "internal server error",
                 "WORKER TIMEOUT", "was sent SIG", '"status":500'):
        assert sign not in log, sign
    statuses = [line["status"] for line in limited.access_lines()]
    assert statuses and max(statuses) < 500
