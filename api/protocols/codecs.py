"""Bytes and JSON to numpy and back: pure functions shared by every protocol.

Each failure raises an `ApiError` whose message names the problem; nothing here knows HTTP or
TensorFlow. Hot paths stay in C: orjson parses, numpy converts nested lists in one call, and a
vectorised byte scan bounds JSON nesting before any Python code walks the document. A big tensor of
numbers skips the Python lists altogether (api/fastjson.py).
"""
import base64
import re

import numpy as np
import orjson

from api.protocols import fastjson
from api.errors import InvalidInput, NonFiniteOutput, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1
# A JSON true/false token sits between structural characters; inside a base64 string it cannot.
_BOOL_TOKEN = re.compile(rb"[\[,:\s](?:true|false)[\],}\s]")
FAST_TENSOR_BYTES = 2048
"""Smallest body `load_json(tensors=True)` tries api/fastjson.py on. Measured (docs/performance.md):
both paths take ~0.05 ms at 600 bytes (the digits body is 554), the fast one 2x less from 2.3 kB,
5x less at 1.1 MB; below the line a body that fell back would pay for both."""


def require_json(content_type: str | None) -> None:
    """Accept JSON bodies (and a missing type, as TensorFlow Serving's clients may send none)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media and media not in JSON_TYPES and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type '{media}' is not supported: send application/json "
            "(with curl: -H 'Content-Type: application/json')")


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays and objects in a JSON document, brackets in strings not counted."""
    if b"\\" in body:
        # Escapes pair up left to right, as bytes.replace matches: drop escaped backslashes, then
        # escaped quotes, and every quote left delimits a string.
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    if len(body) <= _SMALL_BODY:
        depth = _peeled_depth(body)
        if depth is not None:
            return depth
    raw = np.frombuffer(body, dtype=np.uint8)
    steps = _OPEN[raw]
    # Work on the brackets only (a 1 MB tensor body has ~50k of them), not on every byte.
    brackets = np.flatnonzero(steps)
    if b'"' in body:
        quotes = np.flatnonzero(raw == ord('"'))
        outside = np.searchsorted(quotes, brackets) % 2 == 0  # an even number of quotes before it
        brackets = brackets[outside]
    return int(np.cumsum(steps[brackets], dtype=np.int64).max(initial=0))


_SMALL_BODY = 4096
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_LEAF = re.compile(rb"\[\]|\{\}")  # one pass removes the innermost pairs of the text it started with


def _peeled_depth(body: bytes, most: int = 64) -> int | None:
    """json_depth of a small body (escapes already dropped) without numpy's fixed costs (~60 us of ten
    array calls on a 554-byte body): keep the brackets outside strings, then peel every innermost `[]`
    and `{}` pair, one nesting level per pass. None where the count could differ from json_depth's
    (an odd number of quotes, brackets that do not pair up) or is over `most`: the caller counts."""
    if body.count(b'"') % 2:
        return None
    shape = (_STRING.sub(b"", body) if b'"' in body else body).translate(None, _NOT_BRACKET)
    depth = 0
    while shape:
        peeled = _LEAF.sub(b"", shape)
        if len(peeled) == len(shape) or depth == most:
            return None
        shape, depth = peeled, depth + 1
    return depth


def load_json(body: bytes, max_depth: int, tensors: bool = False):
    """Parse a JSON body within a nesting limit; deep documents never reach a recursive parser.

    Returns the top-level object; raises InvalidInput for an empty body, nesting deeper than
    `max_depth` (SERVE_MAX_JSON_DEPTH), malformed JSON (orjson's message) or another top-level type.
    With `tensors`, in a body of FAST_TENSOR_BYTES or more, the tensor of a request (`instances`,
    `inputs`, `<key>.<input name>` or v2's `inputs[0].data`) comes as the ndarray that `np.asarray`
    makes of its lists (int64 or float64, same shape and values) when api/fastjson.py proves it a
    regular array of numbers; anything else, errors included, takes the ordinary path.
    """
    if tensors and len(body) >= FAST_TENSOR_BYTES:
        document = _load_with_tensor(body, max_depth)
        if document is not None:
            return document
    if not body.strip():
        raise InvalidInput("request body is empty: expected a JSON object")
    depth = json_depth(body)
    if depth > max_depth:
        raise InvalidInput(f"JSON nesting depth {depth} is over the limit of {max_depth}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"expected a JSON object at the top level, got {type(document).__name__}")
    return document


def _load_with_tensor(body: bytes, max_depth: int) -> dict | None:
    """load_json's result with the tensor as an ndarray, or None for the ordinary path to decide.

    The rest of the body, the tensor replaced by a placeholder string, goes through orjson and
    json_depth as any body does; the tensor's own depth is its ndim, so the document is within the
    limit exactly when the ordinary path would find it so.
    """
    split = fastjson.split_tensor(body)
    rest = split and fastjson.with_placeholder(split[0], split[2])
    if not rest or json_depth(rest) > max_depth:
        return None
    try:
        document = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    place = fastjson.placeholder_place(document)
    array = fastjson.numeric_array(split[1]) if place else None
    if array is None or place[2] + array.ndim > max_depth:
        return None
    holder, key, _ = place
    holder[key] = array
    return document


def dump_json(document) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def to_array(values, dtype: np.dtype, what: str, body: bytes = b"", name: str | None = None) -> np.ndarray:
    """Nested JSON lists of numbers to an array of `dtype`; refuses ragged, strings, NaN, and booleans
    unless `dtype` is bool (which takes true and false, or 0 and 1).

    `values` may be the ndarray load_json(tensors=True) made of such lists: it holds no booleans
    (fastjson takes numbers only), so only the cast and its checks remain. `name`, where `what` does
    not say it, is the input's: messages about the values' type or range then name it.
    """
    if isinstance(values, list) and not values:
        raise InvalidInput(f"{what} is empty")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise InvalidInput(f"{what} is ragged: every row must have the same length") from None
    kind = array.dtype.kind
    lists = not isinstance(values, np.ndarray)
    takes_bool = np.dtype(dtype).kind == "b"
    if not takes_bool and (kind == "b" or (kind in "iuf" and lists and _may_hold_bool(body)
                                           and _holds_bool(values))):
        raise InvalidInput(f"{what} holds booleans; expected numbers{_takes(name, dtype)}")
    if kind == "O" and lists and _holds_big_int(values):  # beyond (u)int64: numpy keeps Python ints
        raise InvalidInput(f"{what} holds values out of the range of {_range(dtype)}{_takes(name, dtype)}")
    if kind in "USO":
        detail = "ragged or holds non-numbers" if kind == "O" else "holds strings"
        raise InvalidInput(f"{what} {detail}; expected an array of "
                           f"{'booleans' if takes_bool else 'numbers'}{_takes(name, dtype)}")
    return cast(array, dtype, what, name)


def cast(array: np.ndarray, dtype: np.dtype, what: str, name: str | None = None) -> np.ndarray:
    """Cast to the model's dtype where no value changes meaning: refuse non-finite floats, floats for an
    integer or bool input, integers out of the dtype's range (300 or -1 for uint8, 2**40 for int32) and,
    for a bool input, numbers other than 0 and 1. `name`: the input, for messages (see to_array)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub" and array.dtype.kind == "f":
        if _whole_beyond(array, dtype):  # 2**70 in JSON: orjson reads an integer beyond 64 bits as a float
            raise InvalidInput(f"{what} holds values out of the range of {_range(dtype)}{_takes(name, dtype)}")
        raise InvalidInput(f"{what} holds floats but {f'input {name!r}' if name else 'the model'} takes "
                           f"{dtype.name}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(dtype, copy=False)
    # One finiteness check of the result where it is a float: NaN or infinity in the request stays
    # non-finite through the cast, so the request's own values are looked at only to say which it was.
    if dtype.kind == "f" and converted.size and not np.isfinite(converted).all():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput(f"{what} holds NaN or infinity; only finite numbers are accepted")
        raise InvalidInput(f"{what} holds values out of the range of {dtype.name}{_takes(name, dtype)}")
    if dtype.kind not in "fiub" and array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
        raise InvalidInput(f"{what} holds NaN or infinity; only finite numbers are accepted")
    if dtype.kind in "iub" and array.size and not np.array_equal(converted, array):
        raise InvalidInput(f"{what} holds values out of the range of {_range(dtype)}{_takes(name, dtype)}")
    return converted


def _range(dtype: np.dtype) -> str:
    """`uint8 [0, 255]`: an integer dtype and its range, for messages."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "bool (true, false, 0 or 1)"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return f"{dtype.name} [{info.min}, {info.max}]"
    return dtype.name


def _whole_beyond(array: np.ndarray, dtype: np.dtype) -> bool:
    """Floats that are all whole numbers, some beyond the range of the integer (or bool) `dtype`."""
    if not array.size or not np.isfinite(array).all() or not (array == np.trunc(array)).all():
        return False
    low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    return bool((array < low).any() or (array > high).any())


def _takes(name: str | None, dtype: np.dtype) -> str:
    return f" (input '{name}' takes {np.dtype(dtype).name})" if name else ""


def _holds_big_int(values) -> bool:
    """An integer beyond int64 and uint64 among nested lists (numpy makes an object array of them)."""
    return _any_leaf(values, lambda item: isinstance(item, int) and not isinstance(item, bool)
                     and not -2**63 <= item < 2**64)


def _any_leaf(values, test) -> bool:
    """Whether `test` holds for any value among nested lists (walked without recursion: any depth)."""
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif test(item):
            return True
    return False


def to_bytes_array(values, what: str, name: str, max_bytes: int, b64=None, where=None) -> np.ndarray:
    """Nested JSON lists of strings to an object array of `bytes` (each string UTF-8 encoded), the form a
    string input (tf.string) takes; the same shape rules as to_array (ragged is refused). A number,
    boolean, null or object where a string belongs is a 400 naming input `name`.

    `b64`: how a `{"b64": "..."}` element becomes bytes (TensorFlow Serving's form of raw bytes:
    images.decode_b64), or None where the protocol has no such form (v2's JSON). `where(index)` names
    instance `index` in messages (default `what[index]`). An element over `max_bytes` is a 413.
    """
    if isinstance(values, np.ndarray):  # load_json(tensors=True) made it: numbers only
        raise InvalidInput(f"{what} holds numbers; input '{name}' takes strings")
    if isinstance(values, list) and not values:
        raise InvalidInput(f"{what} is empty")
    where = where or (lambda index: f"{what}[{index}]")
    level, shape = [values], []
    while level and all(type(item) is list for item in level):  # noqa: E721 - JSON arrays are lists
        lengths = {len(item) for item in level}
        if len(lengths) > 1:
            raise InvalidInput(f"{what} is ragged: every row must have the same length")
        shape.append(lengths.pop())
        level = [leaf for item in level for leaf in item]
    if any(type(item) is list for item in level):  # noqa: E721
        raise InvalidInput(f"{what} is ragged: every row must have the same length")
    per_instance = max(1, int(np.prod(shape[1:], dtype=np.int64))) if shape else 1
    out = []
    for index, item in enumerate(level):
        if type(item) is str:  # noqa: E721
            try:
                data = item.encode()
            except UnicodeEncodeError:  # orjson refuses lone surrogates; another front's lists may not
                raise InvalidInput(f"{where(index // per_instance)}: a string that is not valid Unicode; "
                                   f"input '{name}' takes strings") from None
        elif b64 is not None and isinstance(item, dict) and set(item) == {"b64"}:
            data = b64(item["b64"], where(index // per_instance))
        else:
            got = ("a boolean" if isinstance(item, bool) else "null" if item is None else
                   "a number" if isinstance(item, (int, float)) else "an object" if isinstance(item, dict)
                   else type(item).__name__)
            forms = 'a string or {"b64": "..."}' if b64 is not None else "a string"
            raise InvalidInput(f"{where(index // per_instance)}: expected {forms}, got {got}; "
                               f"input '{name}' takes strings")
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{where(index // per_instance)}: a string of {len(data)} bytes, over the "
                                  f"limit of {max_bytes} bytes per element (input '{name}')")
        out.append(data)
    array = np.empty(len(out), dtype=object)
    array[:] = out
    return array.reshape(shape)


def bytes_to_json(array: np.ndarray, b64: bool = False) -> list:
    """A string tensor (an object array of bytes) as nested JSON lists, TensorFlow Serving's way: each
    element a string where its bytes are valid UTF-8, else `{"b64": "<base64>"}`; with `b64` (an output
    whose name ends in `_bytes`) every element `{"b64": ...}`."""
    flat = array.reshape(-1)
    out = np.empty(flat.size, dtype=object)
    for index, item in enumerate(flat):
        data = item.encode() if isinstance(item, str) else bytes(item)
        text = None
        if not b64:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                pass
        out[index] = text if text is not None else {"b64": base64.b64encode(data).decode("ascii")}
    return out.reshape(array.shape).tolist()


def _may_hold_bool(body: bytes) -> bool:
    """Cheap first: a substring test runs at memory speed, the regex only when one is there."""
    return (b"true" in body or b"false" in body) and _BOOL_TOKEN.search(body) is not None


def _holds_bool(values) -> bool:
    return _any_leaf(values, lambda item: isinstance(item, bool))


def check_shape(array: np.ndarray, expected: tuple[int | None, ...], what: str,
                max_elements: int) -> None:
    """`expected` is the per-instance shape; None matches any size."""
    if array.size > max_elements:
        raise PayloadTooLarge(f"{what} has {array.size} elements, over the limit of {max_elements}")
    check_instance_shape(array.shape[1:], expected, what)


def check_instance_shape(got: tuple[int, ...], expected: tuple[int | None, ...], what: str) -> None:
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
        want = "[" + ", ".join("any" if e is None else str(e) for e in expected) + "]"
        raise InvalidInput(f"{what} has instances of shape {list(got)}; the model takes {want}")


SHOWN_INSTANCES = 20
"""How many instance indexes a NonFiniteOutput message lists per output before it only counts them."""


def check_finite_outputs(outputs: dict[str, np.ndarray], names=None) -> None:
    """Refuse one request's outputs if any value in them is NaN or infinity (JSON has neither).

    `outputs`: output name -> array [instances, ...] of this request alone (the batcher's slice, so a
    batch-mate's values never count); `names`: the outputs to check, those the answer will carry
    (None: all). Integer, boolean and string outputs are always finite. Raises NonFiniteOutput (422) naming, per
    output, the instance indexes that came out non-finite, e.g.
    `instances [0, 2] gave non-finite values (NaN or infinity) in output 'probabilities'`.
    """
    problems = []
    for name in outputs if names is None else names:
        value = outputs[name]
        if value.dtype.kind not in "fc" or not value.size or np.isfinite(value).all():
            continue  # the common case costs one vectorised pass per output
        if value.ndim == 0:
            problems.append(f"output '{name}' is non-finite (NaN or infinity)")
            continue
        bad = np.flatnonzero(~np.isfinite(value.reshape(len(value), -1)).all(axis=1))
        shown = ", ".join(map(str, bad[:SHOWN_INSTANCES]))
        more = f", ... ({len(bad)} in all)" if len(bad) > SHOWN_INSTANCES else ""
        problems.append(f"instances [{shown}{more}] gave non-finite values (NaN or infinity) in output '{name}'")
    if problems:
        raise NonFiniteOutput("; ".join(problems) + ": the model is out of its range for these inputs")
