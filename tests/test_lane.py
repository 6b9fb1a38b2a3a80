"""The inference lane (api/http/lane.py) answers exactly as Flask-RESTful does, and takes only what it may.

Each request below goes to two apps over the same loaded model: the default one (the lane in front of
Flask) and one with SERVE_INFERENCE_LANE=false (Flask-RESTful alone). Status, body, headers, metrics
and the access line must be the same; the lane must have answered every request of the corpus itself,
and handed every other one to Flask untouched. The real stack's suites (faults, load, fuzzing, browser)
run on the lane as it is the default.
"""
import base64
import gzip
import io
import logging

import numpy as np
import orjson
import pytest
from PIL import Image

from api.http.app import create_app, registry_of
from api.http.lane import InferenceLane

JSON = {"Content-Type": "application/json"}


def _png() -> str:
    buffer = io.BytesIO()
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


DIGIT = (np.arange(64).reshape(8, 8, 1) / 64).tolist()
V2 = {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32", "data": sum(sum(DIGIT, []), [])}]}

# (path, body, headers): answered by the lane, good and bad
CORPUS = [
    ("/predict", {"instances": [DIGIT]}, JSON),
    ("/predict", {"instances": [DIGIT, DIGIT], "top_k": 3}, JSON),
    ("/predict", {"instances": [{"b64": _png()}]}, JSON),
    ("/predict", {"inputs": [DIGIT]}, JSON),
    ("/predict", {"instances": [DIGIT]}, {}),  # no Content-Type: TF Serving's clients may send none
    ("/v1/models/digits:predict", {"instances": [DIGIT]}, JSON),
    ("/v1/models/digits/versions/1:predict", {"instances": [DIGIT]}, JSON),
    ("/v1/models/digits/versions/2:predict", {"instances": [DIGIT], "top_k": 2}, JSON),
    ("/v2/models/digits/infer", V2, JSON),
    ("/v2/models/digits/versions/1/infer", {**V2, "outputs": [{"name": "probabilities", "parameters":
                                                               {"binary_data": True}}]}, JSON),
    ("/predict", b"", JSON),
    ("/predict", b"{not json", JSON),
    ("/predict", b"[1, 2]", JSON),
    ("/predict", {"instances": [DIGIT]}, {"Content-Type": "text/plain"}),
    ("/predict", {"instances": [[1, 2], [3]]}, JSON),
    ("/predict", {"instances": [DIGIT], "top_k": 0}, JSON),
    ("/predict", {"instances": [DIGIT], "extra": 1}, JSON),
    ("/predict", {"instances": [[[[float("nan")]] * 8] * 8]}, JSON),
    ("/predict", {"instances": [{"b64": "not base64!"}]}, JSON),
    ("/predict", b'{"instances": ' + b"[" * 200 + b"]" * 200 + b"}", JSON),
    ("/v1/models/nosuch:predict", {"instances": [DIGIT]}, JSON),
    ("/v1/models/digits/versions/9:predict", {"instances": [DIGIT]}, JSON),
    ("/v2/models/digits/infer", {"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]},
     JSON),
    ("/v2/models/digits/infer", V2, {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": "x"}),
]

# requests the lane must leave to Flask: other methods and routes, labels, compressed, CORS, no length
TO_FLASK = [
    ("GET", "/predict", None, {}),
    ("PUT", "/v1/models/digits:predict", b"{}", JSON),
    ("POST", "/v1/models/digits/labels/stable:predict", orjson.dumps({"instances": [DIGIT]}), JSON),
    ("POST", "/predict", gzip.compress(orjson.dumps({"instances": [DIGIT]})), {**JSON, "Content-Encoding": "gzip"}),
    ("POST", "/predict", orjson.dumps({"instances": [DIGIT]}), {**JSON, "Origin": "https://elsewhere.example"}),
    ("POST", "/predict/", orjson.dumps({"instances": [DIGIT]}), JSON),
    ("POST", "/v1/models/digits:predict:predict", orjson.dumps({"instances": [DIGIT]}), JSON),
    ("POST", "/v1/models/digits/versions/01x:predict", orjson.dumps({"instances": [DIGIT]}), JSON),
    ("POST", "/health", b"{}", JSON),
]


@pytest.fixture(scope="module")
def apps(app, settings):
    """(lane, flask): the session's app, and one without the lane over the same loaded registry."""
    flask_only = create_app(settings.model_copy(update={"inference_lane": False}), registry=registry_of(app))
    assert isinstance(app.wsgi_app, InferenceLane) and not isinstance(flask_only.wsgi_app, InferenceLane)
    return app, flask_only


def _body(body) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


def _answer(app, method, path, body, headers):
    response = app.test_client().open(path, method=method, data=body, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in ("Date", "Server")}
    return response.status_code, response.data, kept


@pytest.fixture()
def flask_calls(apps, monkeypatch):
    """The requests the lane handed to Flask, as (method, path)."""
    lane = apps[0].wsgi_app
    calls, flask_wsgi = [], lane.flask_wsgi

    def counted(environ, start_response):
        calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return flask_wsgi(environ, start_response)

    monkeypatch.setattr(lane, "flask_wsgi", counted)
    return calls


@pytest.mark.parametrize("path,body,headers", CORPUS, ids=[f"{i}:{c[0]}" for i, c in enumerate(CORPUS)])
def test_the_lane_answers_as_flask_restful_does(apps, flask_calls, path, body, headers):
    lane, flask_only = apps
    got = _answer(lane, "POST", path, _body(body), headers)
    expected = _answer(flask_only, "POST", path, _body(body), headers)
    assert flask_calls == [], "the lane handed this request to Flask"
    assert got[0] == expected[0] and got[0] < 500
    if got[2].get("Content-Type") == "application/json":
        assert orjson.loads(got[1]) == orjson.loads(expected[1])
    else:  # v2 binary: the JSON header then the raw outputs
        assert got[1] == expected[1]
    assert got[2] == expected[2]


@pytest.mark.parametrize("method,path,body,headers", TO_FLASK, ids=[f"{c[0]} {c[1]}" for c in TO_FLASK])
def test_the_lane_leaves_everything_else_to_flask(apps, flask_calls, method, path, body, headers):
    lane, flask_only = apps
    got = _answer(lane, method, path, body, headers)
    assert flask_calls == [(method, path)]
    assert got == _answer(flask_only, method, path, body, headers)


def test_a_body_over_the_limit_is_flask_s_413(apps, flask_calls):
    lane, _ = apps
    limit = lane.extensions["settings"].max_body_bytes
    status, body, _ = _answer(lane, "POST", "/predict", b" " * (limit + 1), JSON)
    assert flask_calls == [("POST", "/predict")]
    assert status == 413 and "over the limit" in orjson.loads(body)["error"]


def test_the_lane_writes_flask_s_access_line_and_metrics(apps, flask_calls, caplog):
    from prometheus_client import REGISTRY

    lane, flask_only = apps
    route = "/v1/models/<name:model>/versions/<int:version>:predict"

    def count():
        return REGISTRY.get_sample_value("keras_serving_requests_total", {"route": route, "method": "POST", "status": "200"}) or 0

    lines = []
    for app in (lane, flask_only):
        before = count()
        with caplog.at_level(logging.INFO, logger="api.access"):
            caplog.clear()
            app.test_client().post("/v1/models/digits/versions/2:predict", data=orjson.dumps({"instances": [DIGIT] * 3}),
                                   headers={**JSON, "X-Request-ID": "lane-test"})
        assert count() == before + 1
        (record,) = [r for r in caplog.records if r.name == "api.access"]
        lines.append({k: v for k, v in record.fields.items() if k != "duration_ms"})
    assert lines[0] == lines[1] == {"request_id": "lane-test", "method": "POST", "route": route,
                                    "path": "/v1/models/digits/versions/2:predict", "status": 200,
                                    "model": "digits", "version": 2, "instances": 3}
    assert flask_calls == []


def test_a_short_body_is_a_400(apps):
    lane, _ = apps
    environ_body = orjson.dumps({"instances": [DIGIT]})
    response = lane.test_client().post("/predict", data=environ_body[:-5], headers={**JSON, "Content-Length":
                                                                                    str(len(environ_body))})
    assert response.status_code == 400 and "error" in response.get_json()


class _Reads(io.BytesIO):
    """A request body that records the size of each read."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.sizes: list[int] = []

    def read(self, size=-1):
        self.sizes.append(size)
        return super().read(size)


@pytest.mark.parametrize("headers", [JSON, {**JSON, "Origin": "https://elsewhere.example"}], ids=["lane", "flask"])
def test_a_body_answered_without_being_read_is_read_off_in_large_reads(apps, headers):
    """A 404 (or a 503 with no room for the model) is answered before the body is read; both paths read
    the body off the connection in 1 MiB reads rather than leave it to gunicorn's 1 KiB drain."""
    from werkzeug.test import EnvironBuilder

    body = orjson.dumps({"instances": [[[[0.5]] * 8] * 8] * 3000})  # 1.2 MB of JSON
    environ = EnvironBuilder(path="/v1/models/nosuch:predict", method="POST", data=body,
                             headers=headers).get_environ()
    environ["wsgi.input"] = stream = _Reads(body)
    statuses = []
    answer = b"".join(apps[0].wsgi_app(environ, lambda status, headers: statuses.append(status)))
    assert [s.lower() for s in statuses] == ["404 not found"] and "nosuch" in orjson.loads(answer)["error"]
    assert stream.tell() == len(body) and stream.sizes == [1 << 20, len(body) - (1 << 20)]
