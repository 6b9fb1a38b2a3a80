"""The KServe / Open Inference Protocol v2 REST API, with Triton's binary tensor data extension.

A request is JSON, or JSON followed by raw tensor bytes when the header
`Inference-Header-Content-Length` gives the JSON's length: an input then carries
`"parameters": {"binary_data_size": N}` instead of `"data"`. Outputs come back as JSON `data`, or as
raw bytes after the JSON when the request asks (`binary_data` per output, or `binary_data_output`
for all), which is what tritonclient does by default.
"""
from dataclasses import dataclass

import numpy as np

from api.protocols.codecs import cast, check_instance_shape, check_shape, load_json, to_array
from api.errors import InvalidInput, PayloadTooLarge
from api.model.signature import ModelSignature

HEADER = "Inference-Header-Content-Length"
DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
V2_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
EXTENSIONS = ["binary_tensor_data"]


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    batch: np.ndarray
    outputs: dict[str, bool]  # output name -> send as binary


def parse_header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    # ASCII digits only: str.isdigit() also takes '²' (gunicorn decodes headers as latin-1), which
    # int() refuses; and at most 20 of them, any byte count's (int() refuses over 4300 digits).
    if not (value.isascii() and value.isdigit() and len(value) <= 20) or not 0 < int(value) <= body_length:
        raise InvalidInput(f"{HEADER} must be a length from 1 to the body's {body_length} bytes, "
                           f"got {value[:24]!r}")
    return int(value)


def parse_infer(body: bytes, header_length: int | None, signature: ModelSignature, settings) -> InferRequest:
    json_part, binary = (body[:header_length], body[header_length:]) if header_length else (body, b"")
    document = load_json(json_part, settings.max_json_depth, tensors=True)
    unknown = set(document) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise InvalidInput(f"unknown key(s) {sorted(unknown)} in the inference request")
    request_id = document.get("id")
    if "id" in document and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidInput(f"'inputs' must be a list of exactly one tensor, '{signature.input.name}'")
    batch, used = _input_tensor(inputs[0], binary, json_part, signature, settings)
    if used != len(binary):
        raise InvalidInput(f"binary data has {len(binary) - used} bytes no input claims")
    parameters = _object(document.get("parameters", {}), "'parameters'")
    outputs = document["outputs"] if "outputs" in document else ...  # absent: all outputs; null: an error
    return InferRequest(request_id, batch, _requested_outputs(outputs, parameters, signature))


def _input_tensor(tensor: dict, binary: bytes, json_part: bytes, signature: ModelSignature, settings):
    spec = signature.input
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if name != spec.name:
        raise InvalidInput(f"unknown input {name!r}; the model's input is '{spec.name}'")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InvalidInput(f"input '{name}': 'shape' must be a list of non-negative integers")
    expected = V2_NAMES.get(spec.dtype, spec.dtype.name.upper())
    if datatype != expected:
        raise InvalidInput(f"input '{name}': datatype {datatype!r} does not match the model's {expected}")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count > settings.max_tensor_elements:
        raise PayloadTooLarge(f"input '{name}' has {count} elements, over the limit of "
                              f"{settings.max_tensor_elements}")
    if not shape or shape[0] == 0:
        raise InvalidInput(f"input '{name}': the batch dimension must be at least 1")
    if shape[0] > settings.max_instances:
        raise InvalidInput(f"input '{name}' has {shape[0]} instances, over the limit of "
                           f"{settings.max_instances}")
    # The shape is checked before numpy sees it: numpy cannot reshape to over 64 dimensions, nor to an
    # empty shape whose other dimensions overflow its address space ([1, 0, 2**63]).
    check_instance_shape(tuple(shape[1:]), spec.instance_shape, f"input '{name}'")
    if count == 0:
        raise InvalidInput(f"input '{name}' is empty: its shape {shape} holds no elements")
    size = _object(tensor.get("parameters", {}), f"input '{name}' parameters").get("binary_data_size")
    if size is not None:
        flat, used = _binary_tensor(binary, size, count, spec.dtype, name)
    elif "data" in tensor:
        flat, used = to_array(tensor["data"], spec.dtype, f"input '{name}' data", json_part).reshape(-1), 0
    else:
        raise InvalidInput(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
    if flat.size != count:
        raise InvalidInput(f"input '{name}' has {flat.size} values but its shape {shape} needs {count}")
    batch = cast(flat, spec.dtype, f"input '{name}'").reshape(shape)
    check_shape(batch, spec.instance_shape, f"input '{name}'", settings.max_tensor_elements)
    return batch, used


def _binary_tensor(binary: bytes, size, count: int, dtype: np.dtype, name: str):
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
    if size > len(binary):
        raise InvalidInput(f"input '{name}': binary_data_size {size} is more than the {len(binary)} "
                           "bytes after the JSON header")
    if size != count * dtype.itemsize:
        raise InvalidInput(f"input '{name}': binary_data_size {size} does not match {count} "
                           f"elements of {dtype.name}")
    return np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count), size


def _requested_outputs(outputs, parameters: dict, signature: ModelSignature) -> dict[str, bool]:
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise InvalidInput("'binary_data_output' must be true or false")
    if outputs is ...:
        return {name: default_binary for name in signature.outputs}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    requested = {}
    for output in outputs:
        name = output.get("name")
        if not isinstance(name, str) or name not in signature.outputs:  # a list or object is unhashable
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {sorted(signature.outputs)}")
        binary = _object(output.get("parameters", {}), f"output '{name}' parameters").get(
            "binary_data", default_binary)
        if not isinstance(binary, bool):
            raise InvalidInput(f"output '{name}': 'binary_data' must be true or false")
        requested[name] = binary
    return requested


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object")
    return value


def infer_response(signature: ModelSignature, request: InferRequest, outputs: dict[str, np.ndarray]):
    """The response document and the binary blobs that follow it, in output order."""
    tensors, blobs = [], []
    for name, binary in request.outputs.items():
        array = outputs[name]
        tensor = {"name": name, "datatype": V2_NAMES[array.dtype], "shape": list(array.shape)}
        if binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.reshape(-1)
        tensors.append(tensor)
    document = {"model_name": signature.name, "model_version": str(signature.version),
                "outputs": tensors}
    if request.id is not None:
        document["id"] = request.id
    return document, blobs


def model_metadata(signature: ModelSignature, versions: list[int]) -> dict:
    def tensor(info):
        return {"name": info.name, "datatype": V2_NAMES.get(info.dtype, info.dtype.name.upper()),
                "shape": [-1 if d is None else d for d in info.shape]}

    return {"name": signature.name, "versions": [str(v) for v in versions],
            "platform": "tensorflow_savedmodel" if signature.format == "saved_model" else "keras",
            "inputs": [tensor(i) for i in signature.inputs.values()], "outputs": [tensor(o) for o in signature.outputs.values()]}
