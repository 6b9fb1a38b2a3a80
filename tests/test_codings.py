"""Compressed requests and answers (api/protocols/codings.py; nginx's gzip for answers).

tritonclient compresses request bodies with `request_compression_algorithm` ("gzip" or "deflate") and
asks for compressed answers with `response_compression_algorithm`; both must round-trip against the real
stack. The body limit applies to the decoded size: a small gzip that inflates past it is refused before it
is inflated whole.
"""
import gzip
import time
import zlib

import numpy as np
import orjson
import pytest
import requests
import tritonclient.http as triton

from api.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from api.protocols.codings import decode_body

BODY = orjson.dumps({"instances": [[[[0.5]] * 8] * 8] * 4})


# -- the decoder alone ------------------------------------------------------------------------------------
@pytest.mark.parametrize("coding, encode", [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data, wbits=-15)),  # raw deflate, as some clients send it
    ("identity", lambda data: data), ("GZIP", gzip.compress),
], ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "identity", "upper-case"])
def test_each_supported_coding_decodes_to_the_body(coding, encode):
    assert decode_body(encode(BODY), coding, limit=len(BODY)) == BODY


def test_stacked_codings_are_undone_last_first():
    assert decode_body(gzip.compress(zlib.compress(BODY)), "deflate, gzip", limit=len(BODY)) == BODY


def test_a_bomb_is_refused_once_past_the_limit_not_inflated_whole():
    bomb = gzip.compress(b"0" * (256 << 20), compresslevel=9)  # 256 MiB of zeros in a quarter of a MiB
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match=r"over the limit of 8388608 bytes once decoded \(gzip\)"):
        decode_body(bomb, "gzip", limit=8 << 20)
    assert time.perf_counter() - started < 0.5  # a whole inflate of 256 MiB takes about a second


def test_the_limit_counts_decoded_bytes_exactly():
    assert decode_body(gzip.compress(BODY), "gzip", limit=len(BODY)) == BODY
    with pytest.raises(PayloadTooLarge):
        decode_body(gzip.compress(BODY), "gzip", limit=len(BODY) - 1)


@pytest.mark.parametrize("coding", ["br", "compress", "zstd"])
def test_another_coding_is_a_415_naming_it(coding):
    with pytest.raises(UnsupportedMediaType, match=f"unsupported Content-Encoding '{coding}'") as refused:
        decode_body(b"...", coding, limit=1000)
    assert refused.value.status == 415


@pytest.mark.parametrize("body, why", [
    (b"plainly not gzip", "no gzip header"),
    (gzip.compress(BODY)[:-12], "cut short"),
    (gzip.compress(BODY) + b"trailing", "bytes after the end"),
])
def test_a_body_that_is_not_valid_in_its_coding_is_a_400(body, why):
    with pytest.raises(InvalidInput, match="request body is not valid gzip"):
        decode_body(body, "gzip", limit=1 << 20)


# -- through the real stack (nginx + gunicorn) --------------------------------------------------------------
def predict(stack, body: bytes, **headers) -> requests.Response:
    return requests.post(stack.url + "/predict", data=body, timeout=10,
                         headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("coding, encode", [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_request_gets_the_same_answer(stack, coding, encode):
    plain = predict(stack, BODY)
    compressed = predict(stack, encode(BODY), **{"Content-Encoding": coding})
    assert plain.status_code == compressed.status_code == 200, compressed.text
    assert compressed.json() == plain.json()


def test_a_gzip_bomb_through_nginx_is_a_413_with_a_json_error(stack):
    bomb = gzip.compress(b"[" * (64 << 20), compresslevel=9)  # 64 MiB inflated, ~64 KiB sent
    answer = predict(stack, bomb, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert "once decoded (gzip)" in answer.json()["error"]


def test_an_unknown_coding_through_nginx_is_a_415_naming_it(stack):
    answer = predict(stack, BODY, **{"Content-Encoding": "br"})
    assert answer.status_code == 415 and "'br'" in answer.json()["error"]


def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it(stack):
    body = orjson.dumps({"instances": [[[[0.5]] * 8] * 8] * 64})
    raw = requests.post(stack.url + "/predict", data=body, timeout=10, stream=True,
                        headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"})
    assert raw.status_code == 200 and raw.headers["Content-Encoding"] == "gzip"
    sent = raw.raw.read()  # the bytes on the wire, not decoded
    assert orjson.loads(gzip.decompress(sent))["predictions"] == predict(stack, body).json()["predictions"]
    assert len(sent) < len(gzip.decompress(sent)) / 2
    plain = requests.post(stack.url + "/predict", data=body, timeout=10,
                          headers={"Content-Type": "application/json", "Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_with_compression_both_ways(stack, digits, algorithm):
    batch = digits[0][:32].astype(np.float32)
    tensor = triton.InferInput("image", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=False)  # JSON data: worth compressing
    with triton.InferenceServerClient(stack.url.removeprefix("http://")) as client:
        plain = client.infer("digits", [tensor]).as_numpy("probabilities")
        compressed = client.infer("digits", [tensor], request_compression_algorithm=algorithm,
                                  response_compression_algorithm="gzip").as_numpy("probabilities")
    assert compressed.shape == (32, 10) and np.array_equal(compressed, plain)
