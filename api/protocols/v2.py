"""The KServe / Open Inference Protocol v2 REST API, with Triton's binary tensor data extension.

A request is JSON, or JSON followed by raw tensor bytes when the header
`Inference-Header-Content-Length` gives the JSON's length: an input then carries
`"parameters": {"binary_data_size": N}` instead of `"data"`. Outputs come back as JSON `data`, or as
raw bytes after the JSON when the request asks (`binary_data` per output, or `binary_data_output`
for all), which is what tritonclient does by default.

A model with several inputs takes one tensor per input, by name, in any order, each checked against its
own input's datatype and shape, all with the same batch dimension; binary inputs take their bytes one
after another in the order the tensors are listed. Missing, unknown or repeated input names are a 400
naming them. Outputs are answered by name: those `outputs` lists (in its order), or every output when it
is absent or an empty list (as Triton does). Outputs the model computed as NaN or infinity are a 422
(api/protocols/codecs.check_finite_outputs), JSON and binary alike.

Strings (datatype BYTES: a tf.string input or output, a numpy object array of bytes here): JSON `data`
is a list of strings (flat or nested, row major), each its UTF-8 bytes; in binary, Triton's form, each
element is a 4-byte little-endian length followed by that many bytes, and `binary_data_size` is the
total. A BYTES output is answered likewise: in binary as Triton sends it, and as JSON strings where every
element is valid UTF-8; JSON cannot carry other bytes, so a BYTES output holding them, asked for as JSON,
is a 422 (UnrepresentableOutput) naming the output and the instances and saying to ask for it in binary
(`"parameters": {"binary_data": true}`), as tritonclient does by default. A string element over
SERVE_MAX_STRING_BYTES is a 413. Numbers are checked against their input's dtype (codecs.cast): floats
for an integer input, integers out of its range, are a 400 naming the input.

As Triton and KServe's clients expect: top-level keys the protocol does not define (`model_name`, which
KServe's SDK always sends) are ignored, as Triton ignores them. Triton's classification extension:
`"parameters": {"classification": N}` on an output answers, per instance, its N best classes as BYTES
strings `"score:index:label"`, best first (labels from the version's labels.txt, for the first output;
`"score:index"` otherwise), shape [n, N]. A parameter of an extension we do not implement (sequence
batching, scheduling priority and timeout, shared memory) is a 400 naming it, never silently ignored.
"""
from dataclasses import dataclass, field

import numpy as np

from api.protocols.codecs import (SHOWN_INSTANCES, cast, check_instance_shape, check_shape, load_json, to_array,
                                  to_bytes_array)
from api.errors import InvalidInput, PayloadTooLarge, UnrepresentableOutput
from api.model.signature import ModelSignature

HEADER = "Inference-Header-Content-Length"
DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",  # object: STRING
}
V2_NAMES = {np.dtype(v): k for k, v in DATATYPES.items()}
EXTENSIONS = ["binary_tensor_data", "classification"]
UNSUPPORTED = {  # parameters of Triton's extensions we do not implement, by where they may appear
    "request": {"sequence_id": "sequence", "sequence_start": "sequence", "sequence_end": "sequence",
                "priority": "schedule_policy", "timeout": "schedule_policy"},
    "tensor": {"shared_memory_region": "shared_memory", "shared_memory_byte_size": "shared_memory",
               "shared_memory_offset": "shared_memory"},
}


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request. `inputs`: input name -> batch [n, *instance shape] in that input's
    dtype, every input of the model in the signature's order, the same n for all; `outputs`: output name
    -> send as binary, the outputs to answer in their order."""
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, bool]
    classification: dict[str, int] = field(default_factory=dict)  # output name -> classes to answer


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
    """The request in `body` (its JSON part `header_length` bytes long when binary tensors follow) checked
    against the signature and the limits in `settings`; raises InvalidInput (400) or PayloadTooLarge (413)."""
    json_part, binary = (body[:header_length], body[header_length:]) if header_length else (body, b"")
    document = load_json(json_part, settings.max_json_depth, tensors=True)
    request_id = document.get("id")
    if "id" in document and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    names = list(signature.inputs)
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
        raise InvalidInput(f"'inputs' must be a list of tensor objects, one per model input: {names}")
    given = []
    for tensor in inputs:
        name = tensor.get("name")
        if not isinstance(name, str) or name not in signature.inputs:  # a list or object is unhashable
            raise InvalidInput(f"unknown input {name!r}; the model's input"
                               + (f" is '{names[0]}'" if len(names) == 1 else f"s are {names}"))
        if name in given:
            raise InvalidInput(f"input '{name}' is given twice")
        given.append(name)
    missing = [name for name in names if name not in given]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}; the model's inputs are {names}")
    batches, used = {}, 0
    for tensor in inputs:
        name = tensor["name"]
        batches[name], size = _input_tensor(tensor, binary, used, json_part, signature.inputs[name], settings)
        used += size
    if used != len(binary):
        raise InvalidInput(f"binary data has {len(binary) - used} bytes no input claims")
    counts = {name: len(batches[name]) for name in names}
    if len(set(counts.values())) > 1:
        raise InvalidInput(f"every input needs the same batch dimension, got {counts}")
    parameters = _parameters(document.get("parameters", {}), "'parameters'", "request")
    outputs = document["outputs"] if "outputs" in document else ...  # absent: all outputs; null: an error
    requested, classification = _requested_outputs(outputs, parameters, signature)
    return InferRequest(request_id, {name: batches[name] for name in names}, requested, classification)


def _input_tensor(tensor: dict, binary: bytes, offset: int, json_part: bytes, spec, settings):
    """One input tensor, `spec` its input: (batch, bytes of `binary` it took from `offset` on)."""
    name, shape, datatype = tensor["name"], tensor.get("shape"), tensor.get("datatype")
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
    size = _parameters(tensor.get("parameters", {}), f"input '{name}' parameters", "tensor").get("binary_data_size")
    if size is not None and spec.is_string:
        flat, used = _binary_strings(binary, offset, size, count, name, settings.max_string_bytes)
    elif size is not None:
        flat, used = _binary_tensor(binary, offset, size, count, spec.dtype, name)
    elif "data" in tensor and spec.is_string:
        flat, used = to_bytes_array(tensor["data"], f"input '{name}' data", name,
                                    settings.max_string_bytes).reshape(-1), 0
    elif "data" in tensor:
        flat, used = to_array(tensor["data"], spec.dtype, f"input '{name}' data", json_part).reshape(-1), 0
    else:
        raise InvalidInput(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
    if flat.size != count:
        raise InvalidInput(f"input '{name}' has {flat.size} values but its shape {shape} needs {count}")
    batch = (flat if spec.is_string else cast(flat, spec.dtype, f"input '{name}'")).reshape(shape)
    check_shape(batch, spec.instance_shape, f"input '{name}'", settings.max_tensor_elements)
    return batch, used


def _check_span(binary: bytes, offset: int, size, name: str) -> None:
    """An input's binary_data_size: a non-negative integer that `binary` still holds from `offset` on."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
    left = len(binary) - offset
    if size > left:
        raise InvalidInput(f"input '{name}': binary_data_size {size} is more than the {left} bytes "
                           + ("after the JSON header" if not offset else "left after the inputs before it"))


def _binary_tensor(binary: bytes, offset: int, size, count: int, dtype: np.dtype, name: str):
    """`count` little-endian values of `dtype` from `binary[offset:]`, `size` bytes."""
    _check_span(binary, offset, size, name)
    if size != count * dtype.itemsize:
        raise InvalidInput(f"input '{name}': binary_data_size {size} does not match {count} "
                           f"elements of {dtype.name}")
    if dtype.kind == "b" and np.frombuffer(binary, np.uint8, count=count, offset=offset).max(initial=0) > 1:
        raise InvalidInput(f"input '{name}': BOOL elements are one byte each, 0 (false) or 1 (true)")
    return np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset), size


def _binary_strings(binary: bytes, offset: int, size, count: int, name: str, max_bytes: int):
    """`count` BYTES elements from `binary[offset:]`, `size` bytes in all, Triton's way: each a 4-byte
    little-endian length, then its bytes. Returns (an object array of bytes, `size`)."""
    _check_span(binary, offset, size, name)
    if size < 4 * count:
        raise InvalidInput(f"input '{name}': binary_data_size {size} is too small for {count} BYTES elements "
                           "(each a 4-byte length and its bytes)")
    view, at, end, items = memoryview(binary), offset, offset + size, []
    for index in range(count):
        if at + 4 > end:
            raise InvalidInput(f"input '{name}': its {size} bytes end within the length of element {index} "
                               f"of {count}")
        length = int.from_bytes(view[at:at + 4], "little")
        if length > max_bytes:
            raise PayloadTooLarge(f"input '{name}': element {index} is a string of {length} bytes, over the "
                                  f"limit of {max_bytes} bytes per element")
        if at + 4 + length > end:
            raise InvalidInput(f"input '{name}': element {index} claims {length} bytes, more than the "
                               f"{end - at - 4} left of its binary_data_size {size}")
        items.append(bytes(view[at + 4:at + 4 + length]))
        at += 4 + length
    if at != end:
        raise InvalidInput(f"input '{name}': binary_data_size {size} does not match its {count} BYTES "
                           f"elements, which take {at - offset} bytes")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array, size


def bytes_blob(items) -> bytes:
    """BYTES elements (bytes, flat, row major) in Triton's binary form: each a 4-byte little-endian length
    followed by its bytes."""
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def bytes_data(items, name: str, per_instance: int = 1) -> list[str]:
    """BYTES elements (bytes, flat, row major) as JSON `data`: strings, every element valid UTF-8; else
    UnrepresentableOutput (422) naming output `name` and the instances (`per_instance` elements each)
    whose bytes are not, and how to ask for them (binary)."""
    texts, bad = [], []
    for index, item in enumerate(items):
        try:
            texts.append(item.decode() if isinstance(item, bytes) else str(item))
        except UnicodeDecodeError:
            if not bad or bad[-1] != index // per_instance:
                bad.append(index // per_instance)
    if bad:
        shown = ", ".join(map(str, bad[:SHOWN_INSTANCES])) + (f", ... ({len(bad)} in all)"
                                                             if len(bad) > SHOWN_INSTANCES else "")
        raise UnrepresentableOutput(
            f"output '{name}' holds bytes that are not valid UTF-8 for instances [{shown}], which JSON "
            f"cannot carry: ask for it in binary ({{\"name\": \"{name}\", \"parameters\": "
            "{\"binary_data\": true}}, or \"binary_data_output\": true)")
    return texts


def _requested_outputs(outputs, parameters: dict, signature: ModelSignature):
    """(output name -> send as binary, output name -> classes to answer) for the outputs asked."""
    default_binary = parameters.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise InvalidInput("'binary_data_output' must be true or false")
    if outputs is ... or (isinstance(outputs, list) and not outputs):  # absent or []: all, as Triton does
        return {name: default_binary for name in signature.outputs}, {}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    requested, classification = {}, {}
    for output in outputs:
        name = output.get("name")
        if not isinstance(name, str) or name not in signature.outputs:  # a list or object is unhashable
            raise InvalidInput(f"unknown output {name!r}; the model's outputs are {sorted(signature.outputs)}")
        options = _parameters(output.get("parameters", {}), f"output '{name}' parameters", "tensor")
        binary = options.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise InvalidInput(f"output '{name}': 'binary_data' must be true or false")
        requested[name] = binary
        if "classification" in options:
            classification[name] = _classes(options["classification"], signature.outputs[name])
    return requested, classification


def _classes(value, info) -> int:
    """The classification parameter of output `info`: how many classes to answer, 1 to its class count."""
    if info.is_string:
        raise InvalidInput(f"output '{info.name}': classification needs a numeric output; this one holds "
                           "strings (BYTES)")
    if len(info.shape) != 2 or info.shape[1] is None:
        raise InvalidInput(f"output '{info.name}': classification needs a [batch, classes] output; "
                           f"this one's shape is {[-1 if d is None else d for d in info.shape]}")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= info.shape[1]:
        raise InvalidInput(f"output '{info.name}': classification must be an integer from 1 to its "
                           f"{info.shape[1]} classes, got {value!r}")
    return value


def _parameters(value, what: str, where: str) -> dict:
    """A `parameters` object; a parameter of an extension we do not implement is a 400 naming it."""
    value = _object(value, what)
    for name in value:
        if name in UNSUPPORTED[where]:
            raise InvalidInput(f"{what}: '{name}' belongs to Triton's {UNSUPPORTED[where][name]} extension, "
                               f"which this server does not implement (its extensions: {', '.join(EXTENSIONS)})")
    return value


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object")
    return value


def infer_response(signature: ModelSignature, request: InferRequest, outputs: dict[str, np.ndarray]):
    """The response document and the binary blobs that follow it, in output order: the outputs the
    request asked for (`outputs`: output name -> this request's [n, ...]), each as JSON `data` (flat, row
    major) or as `binary_data_size` little-endian bytes; a string output as BYTES (see the module's
    docstring: a 422 for bytes that are not UTF-8 asked for as JSON)."""
    tensors, blobs = [], []
    first = next(iter(signature.outputs))
    for name, binary in request.outputs.items():
        array = outputs[name]
        if name in request.classification:
            labels = signature.labels if name == first else ()
            classes = classify(array, request.classification[name], labels)
            shape = [len(classes), request.classification[name]]
            tensors.append(_bytes_tensor(name, [item for row in classes for item in row], shape, binary, blobs))
            continue
        if array.dtype == object:  # a string output (BYTES)
            tensors.append(_bytes_tensor(name, array.reshape(-1), list(array.shape), binary, blobs))
            continue
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


def _bytes_tensor(name: str, items, shape: list[int], binary: bool, blobs: list) -> dict:
    """A BYTES output tensor: JSON `data` (strings), or its binary blob appended to `blobs`."""
    tensor = {"name": name, "datatype": "BYTES", "shape": shape}
    if binary:
        blob = bytes_blob(items)
        tensor["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    else:
        per_instance = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        tensor["data"] = bytes_data(items, name, max(1, per_instance))
    return tensor


def classify(scores: np.ndarray, count: int, labels: tuple[str, ...]) -> list[list[bytes]]:
    """Per row of `scores` [n, classes], its `count` best classes as Triton's classification extension
    writes them: `b"score:index:label"` (`b"score:index"` without labels), best first, ties by index."""
    best = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    named = len(labels) == scores.shape[1]
    return [[(f"{row[c]:f}:{c}:{labels[c]}" if named else f"{row[c]:f}:{c}").encode() for c in cols]
            for row, cols in zip(scores, best)]


def model_metadata(signature: ModelSignature, versions: list[int]) -> dict:
    """`GET /v2/models/<name>`: every input and output with its datatype and shape (-1: any size)."""
    def tensor(info):
        return {"name": info.name, "datatype": V2_NAMES.get(info.dtype, info.dtype.name.upper()),
                "shape": [-1 if d is None else d for d in info.shape]}

    return {"name": signature.name, "versions": [str(v) for v in versions],
            "platform": "tensorflow_savedmodel" if signature.format == "saved_model" else "keras",
            "inputs": [tensor(i) for i in signature.inputs.values()],
            "outputs": [tensor(o) for o in signature.outputs.values()]}
