"""What a row becomes in the output: a JSON line or a Parquet row of its prediction, or a line of errors.jsonl.

A prediction line is `{<where it came from>, <kept columns>, "prediction": ..., "top_k": [...]}`:
`"file"` and `"row"` (images: `"file"`, the image's path), or `"key"` with --key-field. `prediction` and
`top_k` are what the API answers for that row, made by the API's own code
(api/protocols/tfserving.predict_response): the same numbers, written the same way. An error line is
`{"file", "row", "key", "status", "error"}`: the status and `{"error": ...}` text of the API's answer.

Parquet shards hold the same fields as columns: `prediction` a (nested) fixed-size list of the output's
dtype (a struct of them for a model with several outputs), `top_k` a list of {label, score}.
"""
import base64
import decimal

import numpy as np
import orjson
import pyarrow as pa

from api.errors import ApiError
from api.model.signature import ModelSignature, TensorInfo
from api.protocols import tfserving

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
OPTIONS_NUMPY = orjson.OPT_SERIALIZE_NUMPY
IMAGE_FORMATS = ("images", "file-list")


class Formatter:
    """`top_k`: (K, the output it ranks) or None; `key_field`/`keep`: the carried fields; `carried_types`:
    their Parquet type (default: text, values that are not text written as their JSON)."""

    def __init__(self, signature: ModelSignature, top_k: tuple[int, str] | None, key_field: str | None,
                 keep: tuple[str, ...], carried_types: dict | None = None):
        self.signature, self.key_field, self.keep = signature, key_field, keep
        self.request = tfserving.PredictRequest({}, False, *(top_k or (None, None)))
        self.carried_types = {name: (carried_types or {}).get(name, pa.string()) for name in (key_field, *keep) if name}

    # -- JSON Lines -------------------------------------------------------------------------------
    def lines(self, block, inferred) -> list[bytes]:
        """The prediction lines of a block's good rows, in input order."""
        out = []
        for positions, outputs in inferred.groups:
            answer = tfserving.predict_response(outputs, self.request, self.signature)
            predictions, ranked = answer["predictions"], answer.get("top_k")
            texts = _row_texts(predictions)
            if texts is None:
                texts = [orjson.dumps(value, option=OPTIONS_NUMPY, default=_json_default) for value in predictions]
            # Written piece by piece, the same bytes orjson writes for the whole record at once.
            heads = self._heads(block, positions)
            if ranked is None:
                lines = [head + b',"prediction":' + text + b"}\n" for head, text in zip(heads, texts)]
            else:
                lines = [head + b',"prediction":' + text + b',"top_k":' + orjson.dumps(top, option=OPTIONS_NUMPY)
                         + b"}\n" for head, text, top in zip(heads, texts, ranked)]
            out.append((positions, lines))
        if len(out) == 1:
            return out[0][1]
        return [line for _, line in sorted((p, line) for positions, lines in out for p, line in zip(positions, lines))]

    def _heads(self, block, positions) -> list[bytes]:
        """Each row's `origin` as orjson writes it, less the closing brace: built from one prefix where the
        record is only where the row came from, else written whole."""
        rows = block.rows
        if block.source.format in IMAGE_FORMATS and not self.keep:
            return [b'{"file":' + orjson.dumps(rows[p]) for p in positions]
        if self.keep:
            return [orjson.dumps(self.origin(block, p), default=_json_default)[:-1] for p in positions]
        if self.key_field:
            keys = block.keys
            return [b'{"key":' + orjson.dumps(keys[p], default=_json_default) for p in positions]
        prefix = b'{"file":' + orjson.dumps(block.source.path) + b',"row":'
        if all(type(rows[p]) is int for p in positions):  # noqa: E721 - line and row numbers
            return [prefix + b"%d" % rows[p] for p in positions]
        return [prefix + orjson.dumps(rows[p]) for p in positions]

    def errors(self, block, errors: dict[int, ApiError]) -> list[bytes]:
        """The errors.jsonl lines of a block's bad rows, in input order."""
        lines = []
        for position in sorted(errors):
            record = {"file": block.source.path, "row": block.rows[position]}
            if block.source.format in IMAGE_FORMATS:
                record = {"file": block.rows[position]}
            record["key"] = block.keys[position] if block.keys else None
            record["status"], record["error"] = errors[position].status, errors[position].message
            lines.append(orjson.dumps(record, option=OPTIONS, default=_json_default))
        return lines

    def origin(self, block, position: int) -> dict:
        """Where a row came from, and the fields it carries."""
        if block.source.format in IMAGE_FORMATS:
            record = {"file": block.rows[position]}
        elif self.key_field:
            record = {"key": block.keys[position]}
        else:
            record = {"file": block.source.path, "row": block.rows[position]}
        if self.keep:
            record.update(block.kept[position])
        return record

    # -- Parquet ----------------------------------------------------------------------------------
    def schema(self, images: bool) -> pa.Schema:
        fields = [("file", pa.string())] if images else (
            [("key", self.carried_types[self.key_field])] if self.key_field else [("file", pa.string()), ("row", pa.int64())])
        fields += [(name, self.carried_types[name]) for name in self.keep]
        outputs = self.signature.outputs
        if len(outputs) == 1:
            fields.append(("prediction", arrow_type(next(iter(outputs.values())))))
        else:
            fields.append(("prediction", pa.struct([(name, arrow_type(info)) for name, info in outputs.items()])))
        if self.request.top_k:
            score = pa.from_numpy_dtype(outputs[self.request.top_k_output].dtype)
            fields.append(("top_k", pa.list_(pa.struct([("label", pa.string()), ("score", score)]))))
        return pa.schema(fields)

    def table(self, block, inferred, schema: pa.Schema) -> pa.Table:
        """A block's good rows as a table of `schema`, in input order."""
        tables = [self._group_table(block, positions, outputs, schema) for positions, outputs in inferred.groups]
        if not tables:
            return schema.empty_table()
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if len(tables) > 1:
            table = table.sort_by("_position")
        return table.drop_columns(["_position"])

    def _group_table(self, block, positions, outputs, schema) -> pa.Table:
        origins = [self.origin(block, position) for position in positions]
        columns = {}
        for field in schema:
            if field.name == "prediction":
                columns["prediction"] = self._predictions(outputs, field.type)
            elif field.name == "top_k":
                ranked = tfserving.top_k(outputs[self.request.top_k_output], self.request.top_k,
                                         self._labels(), self.request.top_k_output)
                columns["top_k"] = pa.array([[{"label": e["label"], "score": e["score"].item()} for e in row]
                                             for row in ranked], type=field.type)
            else:
                values = [origin[field.name] for origin in origins]
                columns[field.name] = pa.array([_text(v) for v in values] if field.type == pa.string() else values,
                                               type=field.type)
        columns["_position"] = pa.array(positions, type=pa.int64())
        return pa.table(columns)

    def _predictions(self, outputs: dict, arrow_type) -> pa.Array:
        if len(outputs) == 1:
            return arrow_array(next(iter(outputs.values())), arrow_type)
        return pa.StructArray.from_arrays([arrow_array(outputs[f.name], f.type) for f in arrow_type],
                                          fields=list(arrow_type))

    def _labels(self) -> tuple[str, ...]:
        first = next(iter(self.signature.outputs))
        return self.signature.labels if self.request.top_k_output == first else ()


def _row_texts(predictions) -> list[bytes] | None:
    """Each row's JSON of a [n, k] numeric array, from one orjson call on the whole array (a call per row
    costs more than the rest of a line); None for any other value (then each row is written alone)."""
    if not isinstance(predictions, np.ndarray) or predictions.ndim != 2 or predictions.dtype.kind not in "fiub" \
            or not predictions.size:
        return None
    whole = orjson.dumps(predictions, option=OPTIONS_NUMPY)  # b"[[...],[...]]": numbers hold no brackets
    return [b"[" + row + b"]" for row in whole[2:-2].split(b"],[")]


def arrow_type(info: TensorInfo) -> pa.DataType:
    kind = pa.binary() if info.is_string else pa.from_numpy_dtype(info.dtype)
    for size in reversed(info.shape[1:]):
        kind = pa.list_(kind) if size is None else pa.list_(kind, size)
    return kind


def arrow_array(value: np.ndarray, kind: pa.DataType | None = None) -> pa.Array:
    """[n, ...] as an arrow array of `kind` (None: nested fixed-size lists of its dtype), built from the
    flat buffer where every dimension is fixed."""
    if value.dtype == object or (kind is not None and not all(pa.types.is_fixed_size_list(t)
                                                              for t in _list_levels(kind))):
        return pa.array(value.tolist(), type=kind)
    array = pa.array(np.ascontiguousarray(value).reshape(-1))
    for size in reversed(value.shape[1:]):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


def _list_levels(kind):
    while pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        yield kind
        kind = kind.value_type


def _text(value):
    """A carried value as Parquet text: text as it is, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default).decode()


def _json_default(value):
    """Values Parquet holds and JSON has no type for: bytes as base64, decimals as text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")
