"""HTTP resources: each reads the request, calls the data plane, and returns what it answers."""
from flask import Response, current_app, g, request
from flask_restful import Resource

from api.errors import ApiError, PayloadTooLarge
from api.http.client import discard, socket_closed
from api.protocols.codings import decode_body


def plane():
    return current_app.extensions["dataplane"]


def request_body() -> bytes:
    """The request body, within max_body_bytes, decoded when sent compressed (api/protocols/codings.py:
    gzip or deflate, the limit applying to the decoded size too).

    werkzeug refuses a Content-Length over the limit (413), but reads a chunked body only up to the
    limit and returns it cut short, as if whole. Behind nginx every body has a length; on gunicorn's
    own port one more byte in the stream means the body was over the limit.
    """
    data = request.get_data(cache=False)
    limit = plane().settings.max_body_bytes
    if request.content_length is None and len(data) >= limit and request.environ["wsgi.input"].read(1):
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    return decode_body(data, request.headers.get("Content-Encoding"), limit)


class Labelled(Resource):
    """TF Serving's `/labels/<label>` routes: the label becomes the version it names, before anything else."""

    def dispatch_request(self, *args, **kwargs):
        if "label" in kwargs:
            kwargs["version"] = plane().registry.version_for_label(kwargs["model"], kwargs.pop("label"))
        return super().dispatch_request(*args, **kwargs)


class Inference(Resource):
    """Inference routes shed load before reading the body: see DataPlane.admit."""

    def dispatch_request(self, *args, **kwargs):
        data = plane()
        try:
            g.call = data.admit(request.headers.get("X-Request-Start"),
                                socket_closed(request.environ.get("gunicorn.socket")),
                                kwargs.get("model", data.registry.name), kwargs.get("version"))
        except ApiError:
            if request.content_length:  # answered unread: read off in large reads (client.discard)
                discard(request.environ["wsgi.input"], request.content_length)
            raise
        return super().dispatch_request(*args, **kwargs)


def answered_by(call) -> dict[str, str]:
    """Headers naming the model version that computed the answer: TensorFlow Serving's body does not
    say (KServe v2's does), and a client (the demo page) should not have to guess the newest version."""
    return {"X-Model-Name": call.model, "X-Model-Version": str(call.version)}


class Predict(Inference):
    """`POST /predict`: the default model, TensorFlow Serving's body."""

    def post(self):
        answer = plane().tfserving_predict(plane().registry.name, None, request_body(),
                                           request.content_type, g.call)
        return answer, 200, answered_by(g.call)


class TFPredict(Labelled, Inference):
    def post(self, model, version=None):
        answer = plane().tfserving_predict(model, version, request_body(), request.content_type, g.call)
        return answer, 200, answered_by(g.call)


class TFModelStatus(Labelled):
    def get(self, model, version=None):
        plane().registry.get(model, version)
        return plane().model_status(model)


class TFModelMetadata(Labelled):
    def get(self, model, version=None):
        return plane().tf_metadata(model, version)


class V2Server(Resource):
    def get(self):
        return plane().server_metadata()


class V2ModelMetadata(Resource):
    def get(self, model, version=None):
        return plane().v2_metadata(model, version)


class V2ModelReady(Resource):
    def get(self, model, version=None):
        plane().registry.get(model, version)
        return {"name": model, "ready": True}


class V2Infer(Inference):
    def post(self, model, version=None):
        body, headers = plane().infer(model, version, request_body(), request.content_type,
                                      request.headers.get("Inference-Header-Content-Length"), g.call)
        return Response(body, 200, headers)


class Live(Resource):
    """`/health`: the process answers; says nothing of the model."""

    def get(self):
        return {"status": "alive"}


class Ready(Resource):
    """`/ready`: 200 once the model is loaded and warm, 503 with the reason before and when draining."""

    def get(self):
        return plane().readiness()


class V2Live(Resource):
    """`/v2/health/live`, shaped as the Open Inference Protocol's schema says (`{"live": true}`): KServe's
    and Triton's clients read that key."""

    def get(self):
        return {"live": True}


class V2Ready(Resource):
    """`/v2/health/ready`: `{"ready": true}` (the protocol's schema, which KServe's client reads), or 503
    with the reason, as `/ready`."""

    def get(self):
        plane().readiness()
        return {"ready": True}


class Metrics(Resource):
    """`/metrics`: Prometheus text, every worker summed. nginx serves it on the instance-only port alone."""

    def get(self):
        from api.metrics import exposition
        body, content_type = exposition()
        return Response(body, 200, content_type=content_type)


class OpenAPI(Resource):
    def get(self):
        from api.http.openapi import document
        return document()


ROUTES = [
    (Predict, ["/predict"]),
    (TFPredict, ["/v1/models/<name:model>:predict", "/v1/models/<name:model>/versions/<int:version>:predict",
                 "/v1/models/<name:model>/labels/<label:label>:predict"]),
    (TFModelStatus, ["/v1/models/<name:model>", "/v1/models/<name:model>/versions/<int:version>",
                     "/v1/models/<name:model>/labels/<label:label>"]),
    (TFModelMetadata, ["/v1/models/<name:model>/metadata",
                       "/v1/models/<name:model>/versions/<int:version>/metadata",
                       "/v1/models/<name:model>/labels/<label:label>/metadata"]),
    (V2Server, ["/v2"]),
    (Live, ["/health"]),
    (Ready, ["/ready"]),
    (V2Live, ["/v2/health/live"]),
    (V2Ready, ["/v2/health/ready"]),
    (V2ModelMetadata, ["/v2/models/<name:model>", "/v2/models/<name:model>/versions/<int:version>"]),
    (V2ModelReady, ["/v2/models/<name:model>/ready", "/v2/models/<name:model>/versions/<int:version>/ready"]),
    (V2Infer, ["/v2/models/<name:model>/infer", "/v2/models/<name:model>/versions/<int:version>/infer"]),
    (OpenAPI, ["/openapi.json"]),
    (Metrics, ["/metrics"]),
]

# The inference routes whose common case api/http/lane.py answers before Flask (labels go to Flask).
LANE_ROUTES = [(url, kind) for resource, kind in ((Predict, "tfserving"), (TFPredict, "tfserving"), (V2Infer, "v2"))
               for url in dict(ROUTES)[resource] if "<label" not in url]
