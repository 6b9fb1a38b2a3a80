"""TensorFlow Serving's REST predict protocol: request parsing and response shapes, as pure functions.

Requests, for a model whose inputs are `a` and `b` (TensorFlow Serving's two formats):

- row format, `{"instances": [{"a": <an instance of a>, "b": <an instance of b>}, ...]}`: every instance an
  object keyed by input name, holding every input. A single-input model also takes bare instances,
  `{"instances": [<instance>, ...]}`, and the named form `[{"<input>": <instance>}, ...]`.
- columnar format, `{"inputs": {"a": [<instances of a>], "b": [<instances of b>]}}`: one tensor per input,
  by name, all with the same number of instances. A single-input model also takes `{"inputs": [...]}`.
  (The object of named tensors is taken under `instances` too; the key decides the answer's format.)

An instance may be `{"b64": "<PNG or JPEG>"}` where it feeds a numeric input whose instance shape is an
image's ([height, width] or [height, width, channels]): the version's serving.json says how it becomes
numbers.

Strings (a DT_STRING input, tf.string; numpy object arrays of bytes here): a JSON string is its UTF-8
bytes, and `{"b64": "..."}` in the place of a string is raw bytes (base64, standard or URL-safe, padded or
not: images.decode_b64), never an image. A number where a string belongs, or a string where a number
does, is a 400 naming the input. A string element over SERVE_MAX_STRING_BYTES is a 413. String outputs
are answered as JSON strings where their bytes are valid UTF-8, else as `{"b64": "..."}`; an output whose
name ends in `_bytes` always as `{"b64": "..."}` (TensorFlow Serving's rule for binary tensors).

Numbers are checked against their input's dtype: floats for an integer input, integers out of its range
(300 or -1 for uint8, 2**40 for int32) and values out of a float's range are a 400 naming the input; a
bool input takes true and false (or 0 and 1).

Errors are InvalidInput (400, PayloadTooLarge 413 over a limit) whose message names where: a missing or
unknown input name (`instances[3]: missing input(s) ['b']; this model's inputs are ['a', 'b']`), a shape,
a dtype, inputs of different instance counts.

Responses: the row format answers `{"predictions": [...]}`, one entry per instance: the output's value for
a single-output model, an object keyed by output name (`{"y1": [...], "y2": [...]}`) for several; the
columnar format answers `{"outputs": <tensor>}` for one output, `{"outputs": {"y1": <tensor>, ...}}` for
several (TensorFlow Serving's documented behaviour).

Our one extension, `top_k`: `"top_k": K` adds `"top_k"`, per instance the K best `{"label", "score"}`
of the model's *first* output (the one the version's labels name; the metadata's `runtime.top_k_output`
says which it is), best first. `"top_k": {"k": K, "output": "<name>"}` ranks the named output instead;
its labels are the class indexes ("0", "1", ...) unless it is the first output. The ranked output must be
[batch, classes], and K at most its classes: a 400 otherwise, before the model runs.

Differences from TensorFlow Serving (documented in the README): non-finite numbers, unknown keys and
non-JSON content types are refused with 4xx, and outputs the model computed as NaN or infinity are a 422
naming the instances and outputs (api/protocols/codecs.check_finite_outputs), never a 200 with nulls.
"""
from dataclasses import dataclass

import numpy as np

from api.protocols.codecs import bytes_to_json, check_shape, to_array, to_bytes_array
from api.errors import InvalidInput
from api.model.signature import ModelSignature, TensorInfo
from api.protocols.images import decode_b64, image_to_instance

KEYS = {"instances", "inputs", "signature_name", "top_k"}
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class PredictRequest:
    """A parsed predict request.

    `inputs`: input name -> batch [n, *instance shape] in that input's dtype, for every input of the
    model in the signature's order, the same n for all; `columnar`: answer in the columnar format;
    `top_k`: K, or None for no ranking; `top_k_output`: the output K ranks (None without top_k).
    """
    inputs: dict[str, np.ndarray]
    columnar: bool
    top_k: int | None
    top_k_output: str | None = None

    @property
    def instances(self) -> int:
        return len(next(iter(self.inputs.values())))


def parse_predict(document: dict, body: bytes, signature: ModelSignature, settings) -> PredictRequest:
    """A parsed `document` (the JSON body, `body` its bytes) checked against the model's signature and
    the limits in `settings`; raises InvalidInput (400) or PayloadTooLarge (413) naming the problem."""
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
    inputs = _batches(document[key], body, signature, settings, key)
    ranked = parse_top_k(document.get("top_k"), settings.max_top_k, signature)
    return PredictRequest(inputs, columnar, *(ranked or (None, None)))


def parse_top_k(value, limit: int, signature: ModelSignature) -> tuple[int, str] | None:
    """`top_k` (K, or `{"k": K, "output": name}`) as (K, the output it ranks), None when absent."""
    if value is None:
        return None
    output = next(iter(signature.outputs))
    if isinstance(value, dict):
        if "k" not in value or set(value) - {"k", "output"}:
            raise InvalidInput(f"top_k must be an integer from 1 to {limit}, or an object "
                               f"{{\"k\": K, \"output\": \"<output name>\"}}; got keys {sorted(value)}")
        output = value.get("output", output)
        if not isinstance(output, str) or output not in signature.outputs:
            raise InvalidInput(f"top_k: unknown output {output!r}; the model's outputs are "
                               f"{list(signature.outputs)}")
        value = value["k"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise InvalidInput(f"top_k must be an integer from 1 to {limit}, got {value!r}")
    if signature.outputs[output].is_string:
        raise InvalidInput(f"top_k needs a numeric output; output '{output}' holds strings")
    shape = signature.outputs[output].shape
    if len(shape) != 2:
        raise InvalidInput(f"top_k needs a [batch, classes] output; output '{output}' is "
                           f"{[-1 if d is None else d for d in shape]}")
    if shape[1] is not None and value > shape[1]:
        raise InvalidInput(f"top_k {value} is more than the {shape[1]} classes of output '{output}'")
    return value, output


def _batches(value, body: bytes, signature: ModelSignature, settings, key: str) -> dict[str, np.ndarray]:
    """`document[key]` as one batch per input (see the module's docstring for the forms it takes)."""
    names = list(signature.inputs)
    if len(names) == 1:
        values = _unwrap_named(value, names[0], key)
        return {names[0]: instances_to_batch(values, body, signature, settings, key)}
    if isinstance(value, dict):  # named tensors: {"a": [instances of a], "b": [...]}
        _check_names(value, names, f"'{key}'")
        batches = {name: instances_to_batch(value[name], body, signature, settings, f"{key}.{name}",
                                            input_name=name) for name in names}
        counts = {name: len(batch) for name, batch in batches.items()}
        if len(set(counts.values())) > 1:
            raise InvalidInput(f"'{key}': every input needs the same number of instances, got {counts}")
        return batches
    # row format: a list of objects keyed by input name
    _check_count(value, settings, key)
    for index, instance in enumerate(value):  # an ndarray (numbers only) fails at its first instance
        if not isinstance(instance, dict):
            raise InvalidInput(f"{key}[{index}] must be an object keyed by input name; this model's inputs "
                               f"are {names}")
        _check_names(instance, names, f"{key}[{index}]")
    return {name: instances_to_batch([instance[name] for instance in value], body, signature, settings,
                                     f"{key}.{name}", input_name=name,
                                     where=lambda index, name=name: f"{key}[{index}].{name}")
            for name in names}


def _check_names(value: dict, names: list[str], where: str) -> None:
    missing = [name for name in names if name not in value]
    unknown = sorted(set(value) - set(names))
    if missing or unknown:
        problems = ([f"missing input(s) {missing}"] if missing else []) + (
            [f"unknown input name(s) {unknown}"] if unknown else [])
        raise InvalidInput(f"{where}: {' and '.join(problems)}; this model's inputs are {names}")


def _check_count(values, settings, what: str) -> None:
    if not isinstance(values, (list, np.ndarray)):
        raise InvalidInput(f"'{what}' must be a list with one entry per instance")
    if not len(values):
        raise InvalidInput(f"'{what}' is empty: send at least one instance")
    if len(values) > settings.max_instances:
        raise InvalidInput(f"'{what}' has {len(values)} instances, over the limit of {settings.max_instances}")


def instances_to_batch(values, body: bytes, signature: ModelSignature, settings, what: str,
                       input_name: str | None = None, where=None) -> np.ndarray:
    """A JSON list of one input's instances (numbers, or b64 images) to one batch array the model accepts.

    `input_name`: the input (None: a single-input model's one input, whose instances may also take the
    named form); `what` names the list in messages, `where(index)` one instance (default `what[index]`).
    `values` may also be the ndarray codecs.load_json(tensors=True) made of a list of numbers: the
    same checks apply, in the same order, with the same messages. Returns [n, *instance shape] in the
    input's dtype; raises InvalidInput (400) or PayloadTooLarge (413).
    """
    _check_count(values, settings, what)
    spec = signature.input if input_name is None else signature.inputs[input_name]
    # A single-input model's messages name the input (several inputs' `what` already does).
    name = spec.name if input_name is None else None
    if spec.is_string:
        where = where or (lambda index: f"{what}[{index}]")
        if input_name is None and isinstance(values, list):  # the named form, per instance
            values = [_unwrap_named(v, spec.name, where(i)) for i, v in enumerate(values)]
        batch = to_bytes_array(values, f"'{what}'", spec.name, settings.max_string_bytes, decode_b64, where)
    elif isinstance(values, list) and any(isinstance(v, dict) for v in values):
        where = where or (lambda index: f"{what}[{index}]")
        rows = [_instance(v, where(i), spec, signature, settings, named=input_name is None)
                for i, v in enumerate(values)]
        if len({row.shape for row in rows}) > 1:  # a None dimension takes any size, but one per batch
            raise InvalidInput(f"'{what}' is ragged: every instance must have the same shape")
        batch = np.stack(rows)
    else:
        batch = to_array(values, spec.dtype, f"'{what}'", body, name)
    if batch.ndim == 0:
        raise InvalidInput(f"'{what}' must be a list with one entry per instance")
    check_shape(batch, spec.instance_shape, f"'{what}'", settings.max_tensor_elements)
    return batch


def _instance(value, where: str, spec: TensorInfo, signature: ModelSignature, settings, named: bool) -> np.ndarray:
    if named:
        value = _unwrap_named(value, spec.name, where)
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise InvalidInput(f"{where}: an object instance must be {{\"b64\": \"...\"}}"
                               + (f" or {{\"{spec.name}\": ...}}" if named else "")
                               + f", got keys {sorted(value)}")
        data = decode_b64(value["b64"], where)
        return image_to_instance(data, signature.image, spec.instance_shape,
                                 settings.max_image_pixels, where).astype(spec.dtype, copy=False)
    array = to_array([value], spec.dtype, where, name=spec.name if named else None)[0]
    check_shape(array[None], spec.instance_shape, where, settings.max_tensor_elements)
    return array


def _unwrap_named(value, input_name: str, where: str):
    """`{"<input name>": x}` is the named form of x for a single-input model."""
    if isinstance(value, dict) and set(value) != {"b64"}:
        if set(value) != {input_name}:
            unknown = sorted(set(value) - {input_name})
            problems = ([f"missing input(s) ['{input_name}']"] if input_name not in value else []) + (
                [f"unknown input name(s) {unknown}"] if unknown else [])
            raise InvalidInput(f"{where}: {' and '.join(problems)}; this model's input is '{input_name}'")
        return value[input_name]
    return value


def top_k(scores: np.ndarray, k: int, labels: tuple[str, ...], output: str = "") -> list[list[dict]]:
    """Per row of `scores` [batch, classes], the k best classes, best first, as {"label", "score"};
    `labels` name the classes when there is one per class, else their indexes do."""
    if scores.ndim != 2:
        raise InvalidInput(f"top_k needs a [batch, classes] output; output '{output}' is {list(scores.shape)}")
    if k > scores.shape[1]:
        raise InvalidInput(f"top_k {k} is more than the {scores.shape[1]} classes of output '{output}'")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    names = labels if len(labels) == scores.shape[1] else tuple(map(str, range(scores.shape[1])))
    return [[{"label": names[c], "score": row[c]} for c in cols] for row, cols in zip(scores, best)]


def predict_response(outputs: dict[str, np.ndarray], request: PredictRequest, signature: ModelSignature) -> dict:
    """The answer document: `outputs` (output name -> this request's [n, ...]) in the request's format;
    a string output as nested lists of strings and `{"b64": ...}` (see the module's docstring)."""
    values = {name: bytes_to_json(value, b64=name.endswith("_bytes")) if value.dtype == object else value
              for name, value in outputs.items()}
    if request.columnar:
        answer = {"outputs": _only(values) if len(values) == 1 else values}
    elif len(values) == 1:
        answer = {"predictions": _only(values)}
    else:
        answer = {"predictions": [dict(zip(values, row)) for row in zip(*values.values())]}
    if request.top_k:
        name = request.top_k_output or next(iter(outputs))
        labels = signature.labels if name == next(iter(signature.outputs)) else ()
        answer["top_k"] = top_k(outputs[name], request.top_k, labels, name)
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
    """`GET /v1/models/<name>/metadata`: TensorFlow Serving's signature_def (every input and output by
    name, with dtype and shape, -1 for any size), plus how we run it (`runtime`: the format, the first
    output's labels, the output a bare top_k ranks, the image conversion, and what the serving core
    measured, e.g. device, traces, load and warm-up seconds)."""
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
                    "top_k_output": next(iter(signature.outputs), None),
                    "image": signature.image.model_dump(), **runtime},
    }


_TF_DTYPES = {"float32": "FLOAT", "float64": "DOUBLE", "float16": "HALF", "int32": "INT32",
              "int64": "INT64", "uint8": "UINT8", "bool": "BOOL", "int8": "INT8", "int16": "INT16",
              "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "complex64": "COMPLEX64",
              "complex128": "COMPLEX128", "object": "STRING"}  # object: a string tensor (STRING)
