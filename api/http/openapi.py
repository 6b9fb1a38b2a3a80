"""The OpenAPI 3.0 document of every route, served at `/openapi.json`; limits come from the settings."""
from flask import current_app

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
ERROR = {"description": "what is wrong", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: str, description: str = "success") -> dict:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict:
    return {str(code): ERROR for code in codes}


LABEL = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_.-]{0,63}$"}


def _params(version: bool | str) -> list[dict]:
    """The path's parameters: the model, and a version number (True) or a version label ("label")."""
    params = [{"name": "model", "in": "path", "required": True, "schema": NAME, "example": "digits"}]
    if version == "label":
        params.append({"name": "label", "in": "path", "required": True, "schema": LABEL, "example": "stable"})
    elif version:
        params.append({"name": "version", "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": 0, "maximum": 2**31}, "example": 1})
    return params


def _body(schema: str) -> dict:
    return {"required": True, "content": {JSON: {"schema": _ref(schema)}}}


ANSWERED_BY = {  # api/http/resources.answered_by: TensorFlow Serving's body does not name the version
    "X-Model-Name": {"description": "the model that answered", "schema": {"type": "string"}},
    "X-Model-Version": {"description": "the version that answered", "schema": {"type": "string"}},
}


def _predict_op(summary: str, version: bool | None) -> dict:
    op = {"summary": summary, "requestBody": _body("PredictRequest"),
          "responses": {"200": {**_ok("PredictResponse"), "headers": ANSWERED_BY},
                        **_errors(400, 404, 413, 415, 422, 503)}}
    if version is not None:
        op["parameters"] = _params(version)
    return {"post": op}


def _get(schema: str, summary: str, version: bool | None, codes=(404, 503)) -> dict:
    op = {"summary": summary, "responses": {"200": _ok(schema), **_errors(*codes)}}
    if version is not None:
        op["parameters"] = _params(version)
    return {"get": op}


def _infer_op(version: bool) -> dict:
    ok = _ok("InferResponse")
    ok["content"]["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
    return {"post": {
        "summary": "KServe v2 inference; JSON, or JSON + binary tensors (Inference-Header-Content-Length)",
        "parameters": _params(version), "requestBody": _body("InferRequest"),
        "responses": {"200": ok, **_errors(400, 404, 413, 415, 422, 503)}}}


def _submit_op(version: bool) -> dict:
    """`:submit`: the predict body, checked as `:predict` checks it, run later by a worker (api/queue/)."""
    accepted = {**_ok("JobAccepted", "accepted: the job is queued (or was, for a repeated Idempotency-Key)"),
                "headers": {"Location": {"description": "the job's status URL", "schema": {"type": "string"}}}}
    key = {"name": "Idempotency-Key", "in": "header", "required": False,
           "description": "the same key (within the result TTL) returns the same job, not a new one",
           "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"}}
    return {"post": {
        "summary": "Submit an asynchronous predict job (TensorFlow Serving's body); poll its status_url",
        "parameters": [*_params(version), key], "requestBody": _body("PredictRequest"),
        "responses": {"202": accepted, **_errors(400, 404, 413, 415, 422, 503)}}}


def _job_op() -> dict:
    job_id = {"name": "job_id", "in": "path", "required": True,
              "schema": {"type": "string"}, "example": "019a2b3c4d5e0123456789abcdef0123"}
    return {"get": {"summary": "An asynchronous job: queued, running, succeeded (with the :predict answer), "
                               "failed or expired (with the error); 410 once its answer expired",
                    "parameters": [job_id], "responses": {"200": _ok("Job"), **_errors(404, 410, 503)}}}


def _schemas(settings) -> dict:
    number_tree = {}  # any nesting of numbers or strings; the model's shape and dtypes decide what is accepted
    image = {"type": "object", "properties": {"b64": {"type": "string", "format": "byte"}},
             "required": ["b64"], "additionalProperties": False,
             "description": "base64: an image (PNG or JPEG) for an image-shaped numeric input; raw bytes "
                            "for a string (DT_STRING) input"}
    tensor = {"anyOf": [{"type": "number"}, {"type": "boolean"},
                        {"type": "string", "description": "a string input's value (UTF-8)"},
                        {"type": "array", "items": number_tree}, image]}
    named = {"type": "object", "description": "one value per input name (models with several inputs)",
             "additionalProperties": tensor}
    instance = {"anyOf": [*tensor["anyOf"], named]}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "PredictRequest": {
            "type": "object", "additionalProperties": False,
            "description": "Exactly one of instances (row format) or inputs (columnar format).",
            "properties": {
                "instances": {"anyOf": [
                    {"type": "array", "minItems": 1, "maxItems": settings.max_instances, "items": instance},
                    named]},
                "inputs": {"anyOf": [
                    {"type": "array", "minItems": 1, "maxItems": settings.max_instances, "items": instance},
                    named]},
                "signature_name": {"type": "string", "enum": ["serving_default"]},
                "top_k": {"anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": settings.max_top_k},
                    {"type": "object", "required": ["k"], "additionalProperties": False, "properties": {
                        "k": {"type": "integer", "minimum": 1, "maximum": settings.max_top_k},
                        "output": {"type": "string"}}}]}},
            "example": {"instances": [[[[0.0]] * 8] * 8], "top_k": 3}},
        "PredictResponse": {"type": "object", "properties": {
            "predictions": {}, "outputs": {},
            "top_k": {"type": "array", "items": {"type": "array", "items": {
                "type": "object", "required": ["label", "score"],
                "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}}}}},
        "ModelStatus": {"type": "object", "required": ["model_version_status"], "properties": {
            "model_version_status": {"type": "array", "items": {"type": "object", "required": ["version", "state"],
                                                                "properties": {"version": {"type": "string"},
                                                                               "state": {"type": "string"}}}}}},
        "TFMetadata": {"type": "object", "required": ["model_spec", "metadata"]},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
        "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"]},
        "ModelReady": {"type": "object", "required": ["name", "ready"]},
        "V2Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "V2Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}},
        "V2Metadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"]},
        "InferTensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8",
                                                    "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
                                                    "BYTES"],
                         "description": "BYTES: strings; JSON data holds strings, binary data each element's "
                                        "4-byte little-endian length and its bytes"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": {"type": "object"}, "data": {"type": "array"}}},
        "InferRequest": {"type": "object", "required": ["inputs"],
                         "example": {"inputs": [{"name": "image", "shape": [1, 8, 8, 1], "datatype": "FP32",
                                                 "data": [0.0] * 64}]},
                         "properties": {
            "id": {"type": "string"}, "parameters": {"type": "object"},
            "inputs": {"type": "array", "minItems": 1, "items": _ref("InferTensor")},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"]}}}},
        "JobAccepted": {"type": "object", "required": ["job_id", "status_url"], "properties": {
            "job_id": {"type": "string"}, "status_url": {"type": "string"}}},
        "Job": {"type": "object", "required": ["job_id", "status"], "properties": {
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "expired"]},
            "model": {"type": "string"}, "version": {"type": "integer", "nullable": True},
            "submitted_at": {"type": "string", "nullable": True}, "started_at": {"type": "string", "nullable": True},
            "finished_at": {"type": "string", "nullable": True}, "attempts": {"type": "integer"},
            "result": _ref("PredictResponse"), "error": {"type": "string"},
            "status_code": {"type": "integer", "description": "what :predict answered (failed, expired)"}}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": _ref("InferTensor")}}},
    }


def document() -> dict:
    settings = current_app.extensions["settings"]
    paths = {
        "/predict": _predict_op("Predict with the default model (TensorFlow Serving's body)", None),
        "/v1/models/{model}:predict": _predict_op("TensorFlow Serving predict", False),
        "/v1/models/{model}/versions/{version}:predict": _predict_op("TensorFlow Serving predict, one version", True),
        "/v1/models/{model}": _get("ModelStatus", "TensorFlow Serving model status", False),
        "/v1/models/{model}/versions/{version}": _get("ModelStatus", "Model status, one version", True),
        "/v1/models/{model}/metadata": _get("TFMetadata", "TensorFlow Serving model metadata", False),
        "/v1/models/{model}/versions/{version}/metadata": _get("TFMetadata", "Model metadata, one version", True),
        "/v1/models/{model}/labels/{label}:predict": _predict_op("TensorFlow Serving predict, the version a label "
                                                                 "names (the store's version_labels.json)", "label"),
        "/v1/models/{model}/labels/{label}": _get("ModelStatus", "Model status, by version label", "label"),
        "/v1/models/{model}/labels/{label}/metadata": _get("TFMetadata", "Model metadata, by version label",
                                                           "label"),
        "/v1/models/{model}:submit": _submit_op(False),
        "/v1/models/{model}/versions/{version}:submit": _submit_op(True),
        "/v1/jobs/{job_id}": _job_op(),
        "/v2": _get("ServerMetadata", "KServe v2 server metadata", None, ()),
        "/v2/health/live": _get("V2Live", "KServe v2 liveness", None, ()),
        "/v2/health/ready": _get("V2Ready", "KServe v2 readiness: 503 until the model is warm", None, (503,)),
        "/v2/models/{model}": _get("V2Metadata", "KServe v2 model metadata", False),
        "/v2/models/{model}/versions/{version}": _get("V2Metadata", "KServe v2 model metadata, one version", True),
        "/v2/models/{model}/ready": _get("ModelReady", "KServe v2 model readiness", False),
        "/v2/models/{model}/versions/{version}/ready": _get("ModelReady", "Model readiness, one version", True),
        "/v2/models/{model}/infer": _infer_op(False),
        "/v2/models/{model}/versions/{version}/infer": _infer_op(True),
        # Instance-only routes: nginx's public port answers them 404 (the status port serves them).
        "/health": _get("Status", "The process is alive (404 on the public port)", None, (404,)),
        "/ready": _get("Status", "The model is loaded and warm; 503 before and while draining", None, (503,)),
        "/metrics": {"get": {"summary": "Prometheus metrics of every worker (instance-only port behind nginx)",
                             "responses": {"200": {"description": "Prometheus text format", "content": {
                                 "text/plain": {"schema": {"type": "string"}}}}, **_errors(404)}}},
    }
    from api.version import __version__
    return {"openapi": "3.0.3",
            "info": {"title": "keras-serving", "version": __version__,
                     "description": "TensorFlow Serving and KServe v2 REST protocols for Keras models. "
                                    "Every error is a JSON body {\"error\": \"...\"}."},
            "paths": paths, "components": {"schemas": _schemas(settings)}}
