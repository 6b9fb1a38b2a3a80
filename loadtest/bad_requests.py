"""Requests a well-behaved server refuses: each must get its 4xx and a JSON {"error": "..."} body.

Real clients send these (typos, wrong shapes, truncated uploads); a share of them in the load shows that
refusing bad input stays cheap and costs no worker while good traffic runs beside it.
"""
from dataclasses import dataclass

import numpy as np
import orjson

from loadtest.model import ServedModel

JSON = "application/json"


@dataclass(frozen=True)
class BadRequest:
    name: str
    path: str
    body: bytes
    status: int
    """The status the server must answer; the error message in the body is free text."""
    content_type: str = JSON


def corpus(model: ServedModel) -> list[BadRequest]:
    predict, tfserving, v2 = "/predict", f"/v1/models/{model.name}:predict", f"/v2/models/{model.name}/infer"
    zeros = np.zeros((1, *model.instance_shape), dtype="float32").tolist()
    wrong_shape = [[0.5] * (model.instance_shape[-1] + 1)]
    other_datatype = "INT32" if model.datatype != "INT32" else "FP32"
    return [
        BadRequest("malformed JSON", predict, b'{"instances": [[0.5, 0.2', 400),
        BadRequest("NaN", predict, b'{"instances": [NaN]}', 400),
        BadRequest("wrong shape", predict, orjson.dumps({"instances": [wrong_shape]}), 400),
        BadRequest("unknown key", predict, orjson.dumps({"instance": zeros}), 400),
        BadRequest("empty batch", tfserving, orjson.dumps({"instances": []}), 400),
        BadRequest("invalid base64", predict, orjson.dumps({"instances": [{"b64": "not base64!"}]}), 400),
        BadRequest("not an image", predict, orjson.dumps({"instances": [{"b64": "aGVsbG8="}]}), 400),
        BadRequest("top_k too large", predict, orjson.dumps({"instances": zeros, "top_k": 10_000}), 400),
        BadRequest("form-encoded body", predict, b"instances=1", 415, "application/x-www-form-urlencoded"),
        BadRequest("unknown model", "/v1/models/no-such-model:predict", orjson.dumps({"instances": zeros}),
                   404),
        BadRequest("v2 wrong datatype", v2, orjson.dumps({"inputs": [{
            "name": model.input_name, "shape": [1, *model.instance_shape], "datatype": other_datatype,
            "data": np.zeros(np.prod(model.instance_shape), dtype="int32").tolist()}]}), 400),
    ]
