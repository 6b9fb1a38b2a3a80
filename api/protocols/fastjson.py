"""Big numeric tensors in JSON, straight from bytes to numpy: no Python object per number.

A 224x224x3 image as JSON numbers is ~150k numbers in ~1.1 MB. The ordinary path (orjson, then
np.asarray of the nested lists, then the checks in `codecs`) makes a Python float for each number
and walks the lists several times. Here simdjson (C++, SIMD, strict JSON) parses the tensor's text and
copies its numbers into one buffer, and byte-level checks (`bytes.translate`, comparisons: C loops)
prove the array is regular.

The rule that keeps every error message as it was: these functions only ever *accept*. They return
a result only when they can prove it is exactly what the ordinary path would produce (same values,
same dtype: int64 when every number is an integer, else float64), and None for anything else
(ragged, empty, booleans, nulls, strings, objects, integers beyond int64, 1e400, malformed text),
so that the caller falls back to the ordinary path and its code raises the error it raises today.
Nothing here raises for a bad document, knows HTTP or imports TensorFlow.
"""
import re

import numpy as np
import simdjson

_WHITESPACE = b" \t\n\r"  # JSON's four; \f and \v are not JSON whitespace
_NUMBER_CHARS = b"0123456789+-.eE"
# Where a request carries its tensor: TensorFlow Serving's "instances" and "inputs" (also in the named
# form {"<input name>": [...]}), and KServe v2's "data". The look-ahead asks for an array of numbers
# (any depth), so v2's `"inputs": [{` and b64 instances do not match.
_TENSOR_KEY = re.compile(rb'"(?:instances|inputs|data)"[ \t\n\r]*:[ \t\n\r]*'
                         rb'(?:\{[ \t\n\r]*"[^"\\]*"[ \t\n\r]*:[ \t\n\r]*)?(?=\[[ \t\n\r\[]*[-0-9])')

# What simdjson raises for a document it refuses (pysimdjson maps its error codes onto these).
_REFUSED = (ValueError, TypeError, IndexError, KeyError, RuntimeError)

PLACEHOLDER = "\x7ffastjson tensor\x7f"
"""The string that stands for the tensor in the rest of the document. DEL (0x7f) may stand raw in a
JSON string, and only a raw DEL byte or a `\\u007f` escape can spell it, so when the rest of the body
holds neither, a value equal to PLACEHOLDER can only be this one."""
_PLACEHOLDER_JSON = b'"\x7ffastjson tensor\x7f"'


def split_tensor(body: bytes) -> tuple[bytes, bytes, bytes] | None:
    """`(head, tensor, tail)` with `body == head + tensor + tail`, where `tensor` is the text of the
    first array of numbers under a tensor key (`instances`, `inputs`, `inputs.<name>`, `data`), as a
    candidate only: nothing is validated yet. None when the body has no such key.

    The tensor ends at the first `}` or `"` after it: in valid JSON an array in an object is followed by
    `,` then a key (a quote), or by `}`; neither byte can occur inside an array of numbers. Both are
    found at memchr speed, unlike a per-byte scan.
    """
    match = _TENSOR_KEY.search(body)
    if match is None:
        return None
    start = match.end()
    ends = [i for i in (body.find(b"}", start), body.find(b'"', start)) if i >= 0]
    if not ends:
        return None
    tensor = body[start:min(ends)].rstrip(_WHITESPACE + b",")
    return body[:start], tensor, body[start + len(tensor):]


def with_placeholder(head: bytes, tail: bytes) -> bytes | None:
    """The body with its tensor replaced by PLACEHOLDER's JSON string; None when head or tail could
    spell the placeholder themselves (a DEL byte, or a `\\u007.` escape)."""
    for part in (head, tail):
        if b"\x7f" in part or b"\\u007" in part:
            return None
    return head + _PLACEHOLDER_JSON + tail


def placeholder_place(document) -> tuple[dict, str, int] | None:
    """Where PLACEHOLDER stands in a parsed request: `(the object holding it, its key, its nesting
    depth)`, on the paths a tensor takes (`instances`, `inputs`, `instances.<name>`, `inputs.<name>`,
    v2's `inputs[0].data`); None anywhere else, so that any other place takes the ordinary path."""
    if not isinstance(document, dict):
        return None
    for key in ("instances", "inputs"):
        value = document.get(key)
        if isinstance(value, str) and value == PLACEHOLDER:
            return document, key, 1
        if isinstance(value, dict):
            for name, inner in value.items():
                if isinstance(inner, str) and inner == PLACEHOLDER:
                    return value, name, 2
        if isinstance(value, list) and value and isinstance(value[0], dict):
            data = value[0].get("data")
            if isinstance(data, str) and data == PLACEHOLDER:
                return value[0], "data", 3
    return None


def numeric_array(text: bytes) -> np.ndarray | None:
    """`np.asarray(orjson.loads(text))` for a JSON array of numbers, computed without Python numbers;
    None unless the text provably is a regular (non-ragged), non-empty nested array of JSON numbers
    that numpy would turn into int64 (every number an integer that fits) or float64 (any number with
    a fraction or an exponent; integers among them converted to the nearest double, as numpy does).

    Shape: as nested in the text (ndim >= 1). Values: simdjson parses each number to the nearest
    double (or exactly, as int64), as orjson does; an integer `-0` is the integer 0 in both. Whatever
    simdjson refuses (malformed numbers, `NaN`, 1e400, integers beyond 64 bits, too deep) is None too.
    """
    if not text.startswith(b"["):
        return None
    try:
        parsed = simdjson.Parser().parse(text)  # a parser per call: no state shared between threads
        shape = []
        node = parsed
        while isinstance(node, simdjson.Array):
            if not len(node):
                return None  # empty lists: the ordinary path says which error
            shape.append(len(node))
            node = node[0]
    except _REFUSED:
        return None
    # Regularity: with the numbers and whitespace taken out, a regular array of this shape leaves
    # exactly one string of brackets and commas; any other byte (a quote, a letter of true or null,
    # a brace) or any other arrangement (ragged rows, a number beside a list) leaves another. The text
    # is valid JSON (simdjson said so), so every slot between `[` or `,` and `,` or `]` holds one value,
    # which here can only be a number.
    structure = text.translate(None, _NUMBER_CHARS + _WHITESPACE)
    if structure != _structure(shape, len(structure)):
        return None
    # numpy makes float64 of a list holding any float, int64 of one holding only integers.
    floats = b"." in text or b"e" in text or b"E" in text
    try:
        buffer = parsed.as_buffer(of_type="d" if floats else "i")  # "i" refuses integers beyond int64
    except _REFUSED:
        return None
    array = np.frombuffer(buffer, dtype=np.float64 if floats else np.int64)
    if array.size != np.prod(shape, dtype=np.int64):
        return None
    return array.reshape(shape)


def _structure(shape: list[int], length: int) -> bytes | None:
    """The brackets and commas of a regular array of `shape`, e.g. `[[,],[,]]` for (2, 2); None when
    it would not be `length` long, so that no ragged text makes us build a large string."""
    size = 0  # a number leaves nothing; an array of d items leaves d * (item + 1) + 1
    for d in reversed(shape):
        size = d * (size + 1) + 1
    if size != length:
        return None
    inner = b""
    for d in reversed(shape):
        inner = b"[" + b",".join([inner] * d) + b"]"
    return inner
