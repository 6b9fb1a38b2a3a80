"""How a row's fields become the model's instance, and which fields are carried to its prediction.

`Layout` is the job's side (the model's inputs, --key-field, --keep-columns, the row size limit);
`Columns` maps a table's columns (CSV, Parquet, a Ray or Spark batch) onto the inputs:
- *named*: every input has a column of its name holding its instance (Parquet: a number or a list,
  nested or flat; CSV: a number, or the instance as JSON text such as `[[0.1, ...]]` or `{"b64": ...}`);
- *flat*: a single-input model reads the row's other columns, in order, as its instance's values
  (the way Vertex AI and SageMaker read a CSV row).
A value whose element count is the instance's is reshaped to the instance's shape (a flat list, or a
number for a one-element input), as Spark's predict_batch_udf flattens tensors. CSV cells are JSON
where they parse as JSON and text otherwise, so a stray word fails its row with the API's own words.

`bulk(table)` reads the instances of rows as one array in C where it can (numbers only, no nulls) and
None otherwise; `instances(table)` gives them one by one, as Python values. The job tries the first and
falls back on the second, so both must mean the same: `bulk` only ever takes what `instances` would.
"""
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from api.errors import InvalidInput
from api.files import numparse
from api.files.sources import UsageError
from api.model.signature import TensorInfo
from api.protocols import fastjson

RESERVED = ("file", "row", "key", "prediction", "top_k")
"""Fields of an output row; --key-field and --keep-columns may not take these names."""
_INTEGER = r"^-?(?:0|[1-9][0-9]*)$"
_NUMBER = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$"  # JSON's grammar: no NaN, no "+1"


@dataclass(frozen=True)
class Layout:
    inputs: dict[str, TensorInfo]
    key_field: str | None = None
    keep: tuple[str, ...] = ()
    max_row_bytes: int = 8 * 1024 * 1024

    @property
    def carries(self) -> bool:
        return bool(self.key_field or self.keep)

    def split(self, value) -> tuple:
        """A JSON Lines row as `(instance or ApiError, key, kept fields)`: the carried fields are taken
        out of an object row unless they are model inputs too."""
        if not self.carries:
            return value, None, {}
        if not isinstance(value, dict):
            if self.key_field:
                return InvalidInput(f"the row is not an object, so it has no key field '{self.key_field}'"), None, {}
            return value, None, dict.fromkeys(self.keep)
        kept = {name: value.get(name) for name in self.keep}
        if self.key_field and self.key_field not in value:
            return InvalidInput(f"the row has no key field '{self.key_field}'"), None, kept
        carried = {self.key_field, *self.keep} - set(self.inputs)
        instance = {name: v for name, v in value.items() if name not in carried}
        return instance, value.get(self.key_field), kept

    @cached_property
    def compiled_numbers(self) -> bool:
        """Whether numeric_rows with a row count can take numparse's one-pass parser: a single input of
        floats whose instance shape is known, rows without carried fields."""
        if len(self.inputs) != 1 or self.carries:
            return False
        info = next(iter(self.inputs.values()))
        shape = info.instance_shape
        return info.dtype in numparse.FLOATS and bool(shape) and None not in shape

    def numeric_rows(self, text: bytes, rows: int = 0) -> np.ndarray | None:
        """A JSON array of rows as one array when every row is numbers of one shape (api/protocols/fastjson:
        exactly what np.asarray would make of the parsed lists), else None.

        With `rows` (their count) and a float input (compiled_numbers), a block of exactly the input's shape
        is parsed in one pass straight into the input's dtype (api/files/numparse.py: bit for bit the cast
        of fastjson's array); anything that parser does not take comes here the general way."""
        if len(self.inputs) != 1:
            return None
        if rows and self.compiled_numbers:
            info = next(iter(self.inputs.values()))
            array = numparse.parse_rows(text, rows, info.instance_shape, info.dtype)
            if array is not None:
                return array
        array = fastjson.numeric_array(text)
        return array if array is not None and array.ndim >= 2 else None


class Columns:
    """The mapping of a table's `names` onto `layout`'s inputs; UsageError (naming `where`) when the
    columns cannot feed the model or lack a carried column. `text`: cells are CSV text."""

    def __init__(self, names: list[str], layout: Layout, text: bool, where: str = "the input"):
        self.layout, self.text = layout, text
        carried = [name for name in (layout.key_field, *layout.keep) if name]
        missing = [name for name in carried if name not in names]
        if missing:
            raise UsageError(f"{where}: no column {missing[0]!r}; its columns are {names}")
        inputs = list(layout.inputs)
        if all(name in names for name in inputs):
            self.named, self.flat = inputs, []
        elif len(inputs) == 1:
            self.named, self.flat = [], [name for name in names if name not in carried]
            if not self.flat:
                raise UsageError(f"{where}: no column left for the model's input '{inputs[0]}'")
        else:
            raise UsageError(f"{where}: the model's inputs {inputs} need a column each; its columns are {names}")

    def keys(self, table) -> list:
        return table.column(self.layout.key_field).to_pylist()

    def kept(self, table) -> list[dict]:
        columns = {name: table.column(name).to_pylist() for name in self.layout.keep}
        return [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []

    def instances(self, table) -> list:
        """Per row read well, its instance as TensorFlow Serving's row format takes it."""
        cells = {name: self._cells(table.column(name)) for name in self.named or self.flat}
        if self.flat:
            shape = self._shape(self.flat[0])
            return [_reshape(list(row), shape) for row in zip(*cells.values())]
        shapes = {name: self._shape(name) for name in self.named}
        if len(self.named) == 1:
            name = self.named[0]
            return [_reshape(value, shapes[name]) for value in cells[name]]
        return [{name: _reshape(value, shapes[name]) for name, value in zip(cells, row)} for row in zip(*cells.values())]

    def bulk(self, table) -> np.ndarray | None:
        """A single-input model's instances as one array [n, ...] when every value is a number (no nulls)
        and they have one shape, else None (then `instances` says what each row is)."""
        if len(self.layout.inputs) != 1 or table.num_rows == 0:
            return None
        if self.flat:
            columns = [self._numbers(table.column(name)) for name in self.flat]
            if any(column is None for column in columns):
                return None
            array = np.stack(columns, axis=1)
        else:
            array = self._array(table.column(self.named[0]))
            if array is None:
                return None
        shape = self._shape(self.flat[0] if self.flat else self.named[0])
        size = int(np.prod(array.shape[1:], dtype=np.int64))
        if None not in shape and size == int(np.prod(shape, dtype=np.int64)) and array.shape[1:] != shape:
            array = array.reshape(len(array), *shape)
        return array

    def _shape(self, name: str) -> tuple:
        info = self.layout.inputs.get(name) or next(iter(self.layout.inputs.values()))
        return info.instance_shape

    def _cells(self, column) -> list:
        values = column.to_pylist()
        return [_json_or_text(value) for value in values] if self.text else values

    def _numbers(self, column) -> np.ndarray | None:
        """A column of numbers (CSV: text that is a JSON number in every cell) as a 1-D array."""
        if column.null_count:
            return None
        if self.text:
            for pattern, kind in ((_INTEGER, pa.int64()), (_NUMBER, pa.float64())):
                if pc.all(pc.match_substring_regex(column, pattern)).as_py():
                    try:
                        return pc.cast(column, kind).to_numpy()
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # an integer beyond int64
                        return None
            return None
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            return column.to_numpy()
        return None

    def _array(self, column) -> np.ndarray | None:
        """A named input's column as [n, ...]: numbers, or lists of numbers of one length (nested too)."""
        if self.text:
            numbers = self._numbers(column)
            if numbers is not None:
                return numbers[:, None]
            cells = column.to_pylist()
            if all(cell[:1] == "[" for cell in cells):
                return self.layout.numeric_rows(("[" + ",".join(cells) + "]").encode())
            return None
        column = column.combine_chunks()
        if column.null_count:
            return None
        shape = [len(column)]
        while pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or \
                pa.types.is_fixed_size_list(column.type):
            lengths = column.value_lengths().to_numpy(zero_copy_only=False)
            if not len(lengths) or (lengths != lengths[0]).any() or column.flatten().null_count:
                return None
            shape.append(int(lengths[0]))
            column = column.flatten()
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            return None
        array = column.to_numpy(zero_copy_only=False).reshape(shape)
        return array if array.ndim >= 2 else array[:, None]


def _json_or_text(cell: str):
    """A CSV cell's value: its JSON (a number, a list, an object, true, null) when it parses, else its text."""
    try:
        return orjson.loads(cell)
    except orjson.JSONDecodeError:
        return cell


def _reshape(value, shape: tuple):
    """A flat list (or a lone number) holding exactly the instance's elements, in the instance's shape;
    anything else as it is, for the API's checks to judge."""
    if None in shape or shape == () or isinstance(value, dict):
        return value
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(value, list):
        if len(value) != size or len(shape) == 1 or any(isinstance(v, (list, dict)) for v in value):
            return value
        return np.array(value, dtype=object).reshape(shape).tolist()
    return np.array([value], dtype=object).reshape(shape).tolist() if size == 1 and value is not None else value
