"""Rows checked as the API checks a request, then run through the model so that one bad row never fails
its batch-mates.

`check` gives each row exactly the verdict and the words the API gives `{"instances": [<row>]}`: it
calls the protocol's own parser (api/protocols/tfserving.parse_predict). A whole block is tried as one
request first (one vectorised check; in C where the rows are numbers); only a block that fails is
checked row by row, to find which rows fail and why. `infer` runs the compiled model once per block
(a call that fails is rerun row by row) and refuses, per row, outputs that came out NaN or infinite,
as the API answers 422. Errors are ApiError instances: `.status` is what the API would answer, and
`.message` its `{"error": ...}`.
"""
from dataclasses import dataclass, field

import numpy as np
import orjson

from api.errors import ApiError
from api.model.signature import ModelSignature
from api.protocols import fastjson, tfserving
from api.protocols.codecs import check_finite_outputs

ANY_BOOLEAN = b" true "
"""The text handed to the parser's boolean check for values that came from no JSON text (CSV cells,
Parquet values): it makes the check walk the values themselves, so a boolean is never taken for 1."""


@dataclass
class Checked:
    """A block's rows after the checks: `errors` (row position -> ApiError) and the good rows in `groups`,
    each `(positions ascending, input name -> array [len(positions), ...])`; rows go in one group unless
    an input takes instances of any size (a None dimension) and theirs differ."""
    errors: dict[int, ApiError] = field(default_factory=dict)
    groups: list[tuple[list[int], dict[str, np.ndarray]]] = field(default_factory=list)


def check(block, signature: ModelSignature, limits, block_limits) -> Checked:
    """`block` (api/files/readers.Block) checked against the model: `limits` are the API's (SERVE_*), for a
    row alone; `block_limits` the same with room for a block's instances and elements.

    The block as one request first. Failing that (a bad row among them), the rows that are numbers are
    read one by one in C (api/protocols/fastjson.py: exactly np.asarray's array) and checked together,
    shape by shape; only the others go through the parser one at a time, so a block with a bad row
    costs little more than a clean one."""
    if block.bulk is not None:
        inputs = _try(block.bulk, b"", signature, block_limits)
        if inputs is not None:
            return Checked({}, [(list(range(len(block))), inputs)])
    values = block.values
    errors = {i: v for i, v in enumerate(values) if isinstance(v, ApiError)}
    pending = [i for i in range(len(values)) if i not in errors]
    groups = _numeric_groups(block, values, pending, signature, block_limits) if len(signature.inputs) == 1 else []
    checked = {i for positions, _ in groups for i in positions}
    rows = {}
    for i in pending:
        if i in checked:
            continue
        body = block.bodies[i] if block.bodies else ANY_BOOLEAN
        try:
            rows[i] = tfserving.parse_predict({"instances": [values[i]]}, body, signature, limits).inputs
        except ApiError as exc:
            errors[i] = exc
    if rows:
        groups = _regroup(groups, rows, signature)
    return Checked(errors, groups)


def _try(instances, body: bytes, signature: ModelSignature, limits) -> dict | None:
    try:
        return tfserving.parse_predict({"instances": instances}, body, signature, limits).inputs
    except ApiError:
        return None


def _numeric_groups(block, values, positions, signature, limits) -> list:
    """The rows whose instance is a regular array of numbers, stacked by shape and dtype and checked
    together: `(positions, inputs)` of each group the checks took."""
    by_kind: dict[tuple, tuple[list, list]] = {}
    for i in positions:
        value = values[i]
        if type(value) is dict and len(value) == 1:  # noqa: E721 - the named form of a single input
            value = next(iter(value.values()))
        if type(value) is not list:  # noqa: E721 - JSON arrays are lists
            continue
        text = block.bodies[i] if block.bodies and block.bodies_are_instances else orjson.dumps(value)
        array = fastjson.numeric_array(text)
        if array is not None:
            group = by_kind.setdefault((array.shape, array.dtype), ([], []))
            group[0].append(i)
            group[1].append(array)
    groups = []
    for rows, arrays in by_kind.values():
        inputs = _try(np.stack(arrays), b"", signature, limits)
        if inputs is not None:
            groups.append((rows, inputs))
    return groups


def _regroup(groups, rows: dict, signature) -> list:
    """Groups and single rows merged: rows whose inputs have one shape in one group, in input order."""
    for positions, inputs in groups:
        for j, i in enumerate(positions):
            rows[i] = {name: array[j:j + 1] for name, array in inputs.items()}
    by_shape: dict[tuple, list[int]] = {}
    for i in sorted(rows):
        by_shape.setdefault(tuple((a.shape, a.dtype) for a in rows[i].values()), []).append(i)
    return sorted(((positions, {name: np.concatenate([rows[i][name] for i in positions]) for name in signature.inputs})
                   for positions in by_shape.values()), key=lambda group: group[0][0])


@dataclass
class Inferred:
    """A block's outcome: `errors` (row position -> ApiError, the checks' and the model's) and per group of
    good rows `(positions, output name -> array [len(positions), ...])`."""
    errors: dict[int, ApiError]
    groups: list[tuple[list[int], dict[str, np.ndarray]]]

    @property
    def predicted(self) -> int:
        return sum(len(positions) for positions, _ in self.groups)


def infer(runtime, checked: Checked, pad_to: int = 0) -> Inferred:
    """Run every group of `checked` through `runtime` (api/runtime.ModelRuntime). A call the model refuses
    (InferenceFailed) is rerun row by row so that only the rows it refuses fail; a row whose outputs hold
    NaN or infinity fails with the API's 422 for it alone. `pad_to`: call with this many rows (XLA
    compiles one program per batch shape)."""
    errors, groups = dict(checked.errors), []
    for positions, inputs in checked.groups:
        try:
            outputs = call(runtime, inputs, pad_to)
        except ApiError:
            outputs = None
        if outputs is None:
            positions, outputs = _one_by_one(runtime, positions, inputs, errors, pad_to)
        positions, outputs = _finite(positions, outputs, errors)
        if positions:
            groups.append((positions, outputs))
    return Inferred(errors, groups)


def call(runtime, inputs: dict[str, np.ndarray], pad_to: int = 0) -> dict[str, np.ndarray]:
    """One compiled call for `inputs` (input name -> [n, ...]), outputs for those n rows.

    A lone row is called as two (itself twice): TensorFlow's CPU kernels compute a batch of one another
    way, which moves the last bits of a float (measured: up to 1.2e-6 on digits), and a row's numbers
    must not depend on whether it ended up alone in its call."""
    count = len(next(iter(inputs.values())))
    size = max(count, 2, pad_to)
    if size != count:
        inputs = {name: np.concatenate([array, np.repeat(array[-1:], size - count, axis=0)])
                  for name, array in inputs.items()}
    outputs = runtime.infer(inputs)
    return outputs if size == count else {name: value[:count] for name, value in outputs.items()}


def _one_by_one(runtime, positions, inputs, errors, pad_to):
    kept, results = [], []
    for row, position in enumerate(positions):
        try:
            results.append(call(runtime, {name: array[row:row + 1] for name, array in inputs.items()}, pad_to))
            kept.append(position)
        except ApiError as exc:
            errors[position] = exc
    if not kept:
        return [], {}
    return kept, {name: np.concatenate([r[name] for r in results]) for name in results[0]}


def _finite(positions, outputs, errors):
    """Rows whose outputs are all finite; the others get the API's 422 for that row sent alone."""
    if not positions:
        return positions, outputs
    bad = np.zeros(len(positions), dtype=bool)
    for value in outputs.values():
        if value.dtype.kind in "fc" and value.size and not np.isfinite(value).all():
            bad |= ~np.isfinite(value.reshape(len(value), -1)).all(axis=1)
    if not bad.any():
        return positions, outputs
    for row in np.flatnonzero(bad):
        try:
            check_finite_outputs({name: value[row:row + 1] for name, value in outputs.items()})
        except ApiError as exc:
            errors[positions[row]] = exc
    keep = np.flatnonzero(~bad)
    return [positions[i] for i in keep], {name: value[keep] for name, value in outputs.items()}
