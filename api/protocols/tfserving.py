"""TensorFlow Serving's REST predict protocol: request parsing and response shapes, as pure functions.

Row format `{"instances": [...]}` answers `{"predictions": ...}`; columnar `{"inputs": ...}` answers
`{"outputs": ...}`. An instance may be `{"b64": "<PNG or JPEG>"}`. Our one extension: `"top_k": K`
adds `"top_k"`, per instance the K best `{"label", "score"}`, best first.
Differences from TensorFlow Serving (documented in the README): non-finite numbers, unknown keys
and non-JSON content types are refused with 4xx.
"""
from dataclasses import dataclass

import numpy as np

from api.protocols.codecs import check_shape, to_array
from api.errors import InvalidInput
from api.model.signature import ModelSignature
from api.protocols.images import decode_b64, image_to_instance

KEYS = {"instances", "inputs", "signature_name", "top_k"}
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class PredictRequest:
    batch: np.ndarray
    columnar: bool
    top_k: int | None


def parse_predict(document: dict, body: bytes, signature: ModelSignature, settings) -> PredictRequest:
    unknown = set(document) - KEYS
    if unknown:
        raise InvalidInput(f"unknown key(s) {sorted(unknown)}; expected 'instances' or 'inputs', "
                           "optionally 'signature_name' and 'top_k'")
    if ("instances" in document) == ("inputs" in document):
        raise InvalidInput("send exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    signature_name = document.get("signature_name", SIGNATURE)
    if signature_name != SIGNATURE:
        raise InvalidInput(f"unknown signature_name {signature_name!r}; this model has '{SIGNATURE}'")
    columnar = "inputs" in document
    key = "inputs" if columnar else "instances"
    values = _unwrap_named(document[key], signature.input.name, key)
    batch = instances_to_batch(values, body, signature, settings, key)
    return PredictRequest(batch, columnar, parse_top_k(document.get("top_k"), settings.max_top_k))


def parse_top_k(value, limit: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InvalidInput(f"top_k must be an integer from 1 to {limit}, got {value!r}")
    return value


def instances_to_batch(values, body: bytes, signature: ModelSignature, settings, what: str) -> np.ndarray:
    """A JSON list of instances (numbers, or b64 images) to one batch array the model accepts.

    `values` may also be the ndarray codecs.load_json(tensors=True) made of a list of numbers: the
    same checks apply, in the same order, with the same messages.
    """
    if not isinstance(values, (list, np.ndarray)):
        raise InvalidInput(f"'{what}' must be a list with one entry per instance")
    if not len(values):
        raise InvalidInput(f"'{what}' is empty: send at least one instance")
    if len(values) > settings.max_instances:
        raise InvalidInput(f"'{what}' has {len(values)} instances, over the limit of {settings.max_instances}")
    spec = signature.input
    if isinstance(values, list) and any(isinstance(v, dict) for v in values):
        rows = [_instance(v, i, signature, settings, what) for i, v in enumerate(values)]
        if len({row.shape for row in rows}) > 1:  # a None dimension takes any size, but one per batch
            raise InvalidInput(f"'{what}' is ragged: every instance must have the same shape")
        batch = np.stack(rows)
    else:
        batch = to_array(values, spec.dtype, f"'{what}'", body)
    if batch.ndim == 0:
        raise InvalidInput(f"'{what}' must be a list with one entry per instance")
    check_shape(batch, spec.instance_shape, f"'{what}'", settings.max_tensor_elements)
    return batch


def _instance(value, index: int, signature: ModelSignature, settings, what: str) -> np.ndarray:
    where = f"{what}[{index}]"
    value = _unwrap_named(value, signature.input.name, where)
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise InvalidInput(f"{where}: an object instance must be {{\"b64\": \"...\"}} or "
                               f"{{\"{signature.input.name}\": ...}}, got keys {sorted(value)}")
        data = decode_b64(value["b64"], where)
        return image_to_instance(data, signature.image, signature.input.instance_shape,
                                 settings.max_image_pixels, where).astype(signature.input.dtype, copy=False)
    array = to_array([value], signature.input.dtype, where)[0]
    check_shape(array[None], signature.input.instance_shape, where, settings.max_tensor_elements)
    return array


def _unwrap_named(value, input_name: str, where: str):
    """`{"<input name>": x}` is the named form of x for a single-input model."""
    if isinstance(value, dict) and set(value) != {"b64"}:
        if set(value) != {input_name}:
            raise InvalidInput(f"{where}: unknown input name(s) {sorted(value)}; "
                               f"this model's input is '{input_name}'")
        return value[input_name]
    return value


def top_k(scores: np.ndarray, k: int, labels: tuple[str, ...]) -> list[list[dict]]:
    """Per row, the k best classes, best first."""
    if scores.ndim != 2:
        raise InvalidInput(f"top_k needs a [batch, classes] output; this model's is {list(scores.shape)}")
    if k > scores.shape[1]:
        raise InvalidInput(f"top_k {k} is more than the model's {scores.shape[1]} classes")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = labels if len(labels) == scores.shape[1] else tuple(map(str, range(scores.shape[1])))
    return [[{"label": names[c], "score": row[c]} for c in cols] for row, cols in zip(scores, best)]


def predict_response(outputs: dict[str, np.ndarray], request: PredictRequest,
                     labels: tuple[str, ...]) -> dict:
    if request.columnar:
        answer = {"outputs": _only(outputs) if len(outputs) == 1 else outputs}
    elif len(outputs) == 1:
        answer = {"predictions": _only(outputs)}
    else:
        answer = {"predictions": [dict(zip(outputs, row)) for row in zip(*outputs.values())]}
    if request.top_k:
        answer["top_k"] = top_k(next(iter(outputs.values())), request.top_k, labels)
    return answer


def _only(outputs: dict):
    return next(iter(outputs.values()))


def model_status(name: str, versions: list[int], state: str) -> dict:
    """`GET /v1/models/<name>`: TensorFlow Serving's GetModelStatus response."""
    tf_state = {"ready": "AVAILABLE", "loading": "LOADING", "draining": "UNLOADING"}.get(state, "END")
    return {"model_version_status": [
        {"version": str(v), "state": tf_state, "status": {"error_code": "OK", "error_message": ""}}
        for v in versions]}


def model_metadata(signature: ModelSignature, runtime: dict) -> dict:
    """`GET /v1/models/<name>/metadata`: TensorFlow Serving's signature_def, plus how we run it
    (`runtime`: what the serving core measured, e.g. device, traces, load and warm-up seconds)."""
    def tensor(info):
        return {"dtype": "DT_" + _TF_DTYPES.get(info.dtype.name, info.dtype.name.upper()),
                "tensor_shape": {"dim": [{"size": str(-1 if d is None else d), "name": ""}
                                         for d in info.shape], "unknown_rank": False},
                "name": info.name}

    return {
        "model_spec": {"name": signature.name, "signature_name": "", "version": str(signature.version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: {
            "inputs": {name: tensor(info) for name, info in signature.inputs.items()},
            "outputs": {name: tensor(info) for name, info in signature.outputs.items()},
            "method_name": "tensorflow/serving/predict",
        }}}},
        "runtime": {"format": signature.format, "labels": list(signature.labels),
                    "image": signature.image.model_dump(), **runtime},
    }


_TF_DTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "float16": "HALF", "int32": "INT32",
              "int64": "INT64", "uint8": "UINT8", "bool": "BOOL", "int8": "INT8", "int16": "INT16"}
