"""Rows out of files, in order, a block at a time: JSON Lines, CSV, Parquet and image files.

Every reader answers `read(limit) -> Block | None` (up to `limit` rows, None at the end) and
`skip(count) -> int` (rows passed over unparsed, for --resume), so the job holds one block per stage,
never a file. A row that cannot even be read as a row (malformed JSON, a CSV record with too many cells,
a missing image) is still a row: it keeps its place, with its error, so row numbers and shards do not
depend on what is in the rows.

A row's *instance* is what TensorFlow Serving's row format takes as one entry of `instances`
(api/protocols/tfserving.py): a nested list, `{"b64": ...}`, or an object keyed by input name.
- JSON Lines: each non-blank line is one instance; with --key-field or --keep-columns each line is an
  object, those fields are carried and the rest is the instance.
- CSV and Parquet (api/files/columns.py): a column per input holds it, or for a single-input model the
  row's other columns in order are its values, flat.
- Images: each file's bytes, as `{"b64": ...}` would carry them.
"""
import base64
import os
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import orjson
import pyarrow as pa
import pyarrow.csv as csv
import pyarrow.parquet as pq

from api.errors import ApiError, InvalidInput, PayloadTooLarge
from api.files.columns import Columns, Layout
from api.files.sources import Source, UsageError, is_gzip, open_binary


@dataclass(eq=False)
class Block:
    """Consecutive rows of one source, as read.

    `rows`: each row's number in its file (1-based: a JSON Lines or CSV line, the header being line 1;
    a Parquet row; an entry of an image folder or list), or each image's path for images. `bulk`: the
    rows' single input as one array [n, ...], when the reader could read it so (every row then is a
    numeric instance, still to be checked); `values` (computed on first use): per row, its instance or
    the ApiError it already failed with; `bodies`: per row, the text its instance came from (the check
    for JSON booleans reads it), or None where no text is kept. `keys`/`kept`: carried per row.
    The fields past `done` are the job's: set by the job, not the reader.
    `done`: progress units of the source read once this block was.
    """
    source: Source
    rows: list
    make_values: Callable[[], list] = field(repr=False)
    bulk: object = None
    bodies: list[bytes] | None = None
    bodies_are_instances: bool = False  # each body is its row's instance itself (JSON Lines, no carried fields)
    keys: list | None = None
    kept: list[dict] | None = None
    done: int = 0
    first: int = 0  # the row's index among all the job's rows: set by the job, which shards by it

    @cached_property
    def values(self) -> list:
        return self.make_values()

    def __len__(self) -> int:
        return len(self.rows)


def open_reader(source: Source, layout: Layout):
    return {"jsonl": JsonLines, "csv": Csv, "parquet": Parquet, "images": Images,
            "file-list": FileList}[source.format](source, layout)


class JsonLines:
    """One instance per non-blank line; lines longer than the row limit are refused without being held."""

    def __init__(self, source: Source, layout: Layout):
        self.source, self.layout = source, layout
        self._stream, self._raw = open_binary(source.path)
        self._number = 0

    def read(self, limit: int) -> Block | None:
        numbers, lines = self._lines(limit)
        if not lines:
            return None
        bulk = None
        if not self.layout.carries and all(type(line) is bytes and line.startswith(b"[") for line in lines):
            bulk = self.layout.numeric_rows(b"[" + b",".join(lines) + b"]", len(lines))
        split = [self._parse(line) for line in lines] if self.layout.carries else None
        keys = [s[1] for s in split] if split and self.layout.key_field else None
        kept = [s[2] for s in split] if split and self.layout.keep else None
        values = (lambda: [s[0] for s in split]) if split else (lambda: [self._parse(line)[0] for line in lines])
        return Block(self.source, numbers, values, bulk, [b if type(b) is bytes else b"" for b in lines],
                     not self.layout.carries, keys, kept, self._raw.tell())

    def skip(self, count: int) -> int:
        skipped = 0
        while skipped < count:
            numbers, _ = self._lines(min(count - skipped, 4096), keep=False)
            if not numbers:
                break
            skipped += len(numbers)
        return skipped

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def _lines(self, limit: int, keep: bool = True) -> tuple[list[int], list]:
        numbers, lines = [], []
        cap = self.layout.max_row_bytes + 1
        readline = self._stream.readline
        while len(numbers) < limit:
            line = readline(cap)
            if not line:
                break
            self._number += 1
            if len(line) == cap and not line.endswith(b"\n"):
                size = len(line)
                while (more := readline(1 << 20)) and (size := size + len(more)) and not more.endswith(b"\n"):
                    pass
                line = PayloadTooLarge(f"the row is {size} bytes, over the limit of {cap - 1} bytes "
                                       "(SERVE_MAX_BODY_BYTES)")
            elif line.isspace():
                continue
            numbers.append(self._number)
            if keep:
                lines.append(line)
        return numbers, lines

    def _parse(self, line) -> tuple:
        if isinstance(line, ApiError):
            return line, None, {}
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            # the same words as the API's for a body it cannot parse (api/protocols/codecs.load_json)
            return InvalidInput(f"malformed JSON: {exc}"), None, {}
        return self.layout.split(value)


class _Columnar:
    """CSV and Parquet: record batches in, blocks of `limit` rows out (a block may join two batches).
    `_next_chunk()` gives (table of the rows read well, every row's number, position -> error of those
    that were not), or None at the end."""

    def __init__(self, source: Source, layout: Layout):
        self.source, self.layout = source, layout
        self._pending: deque = deque()  # (table, numbers, errors) not yet handed out
        self.columns: Columns | None = None

    def read(self, limit: int) -> Block | None:
        parts = self._take(limit)
        if not parts:
            return None
        numbers = [n for _, part_numbers, _ in parts for n in part_numbers]
        errors, offset = {}, 0
        for _, part_numbers, part_errors in parts:
            errors.update({offset + position: error for position, error in part_errors.items()})
            offset += len(part_numbers)
        table = pa.concat_tables([table for table, _, _ in parts]) if len(parts) > 1 else parts[0][0]
        columns = self.columns
        keys = _spread(columns.keys(table), numbers, errors) if self.layout.key_field else None
        kept = _spread(columns.kept(table), numbers, errors, {}) if self.layout.keep else None
        bulk = columns.bulk(table) if not errors else None

        def values():
            good = iter(columns.instances(table))
            return [errors[i] if i in errors else next(good) for i in range(len(numbers))]
        return Block(self.source, numbers, values, bulk, None, False, keys, kept, self._done())

    def skip(self, count: int) -> int:
        return sum(len(numbers) for _, numbers, _ in self._take(count))

    def _take(self, limit: int) -> list:
        parts, taken = [], 0
        while taken < limit:
            if not self._pending:
                chunk = self._next_chunk()
                if chunk is None:
                    break
                self._pending.append(chunk)
            table, numbers, errors = self._pending.popleft()
            want = limit - taken
            if len(numbers) > want:  # split the chunk: rows read well before position `want` stay together
                good = want - sum(1 for p in errors if p < want)
                self._pending.appendleft((table.slice(good), numbers[want:],
                                          {p - want: e for p, e in errors.items() if p >= want}))
                table, numbers = table.slice(0, good), numbers[:want]
                errors = {p: e for p, e in errors.items() if p < want}
            parts.append((table, numbers, errors))
            taken += len(numbers)
        return parts


def _spread(values: list, numbers: list, errors: dict, missing=None) -> list:
    """Per-row values of the rows read well, spread over every row (`missing` for a row that was not)."""
    good = iter(values)
    return [missing if i in errors else next(good) for i in range(len(numbers))]


class Csv(_Columnar):
    """pyarrow's streaming CSV reader, every cell read as text (api/files/columns.py gives it meaning). A
    record with another number of cells than the header is an error in its place, not the file's end."""

    BLOCK_BYTES = 1 << 20

    def __init__(self, source: Source, layout: Layout):
        super().__init__(source, layout)
        # Every cell as text: what a cell means is decided per model input (api/files/columns.py), so a
        # stray word fails its own row, not the block pyarrow would have inferred a number type for.
        names = self._open(csv.ConvertOptions()).schema.names
        self._raw.close()
        self._reader = self._open(csv.ConvertOptions(column_types={name: pa.string() for name in names}))
        self.columns = Columns(names, layout, text=True, where=source.path)

    def _open(self, convert):
        self._raw = pa.OSFile(self.source.path)
        stream = pa.CompressedInputStream(self._raw, "gzip") if is_gzip(self.source.path) else self._raw
        self._invalid: deque = deque()  # (line number, error), reported by pyarrow a block ahead
        self._line = 2  # the first record's line: the header is line 1
        try:
            return csv.open_csv(stream, read_options=csv.ReadOptions(block_size=self.BLOCK_BYTES, use_threads=False),
                                parse_options=csv.ParseOptions(invalid_row_handler=self._invalid_row),
                                convert_options=convert)
        except (pa.ArrowInvalid, StopIteration) as exc:
            raise UsageError(f"{self.source.path}: not a CSV file with a header ({exc})") from None

    def _invalid_row(self, row) -> str:
        self._invalid.append((row.number, InvalidInput(
            f"the record has {row.actual_columns} cells, the header {row.expected_columns}")))
        return "skip"

    def _next_chunk(self):
        try:
            batch = self._reader.read_next_batch()
        except StopIteration:
            batch = None
        count = 0 if batch is None else batch.num_rows
        numbers, errors = [], {}
        while count or (batch is None and self._invalid):
            if self._invalid and (self._invalid[0][0] <= self._line or (batch is None and not count)):
                number, error = self._invalid.popleft()
                errors[len(numbers)] = error
                numbers.append(number)
                self._line = number + 1
                continue
            numbers.append(self._line)
            self._line += 1
            count -= 1
        if batch is None and not numbers:
            return None
        table = pa.Table.from_batches([batch]) if batch is not None else self._reader.schema.empty_table()
        return table, numbers, errors

    def _done(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()


class Parquet(_Columnar):
    """pyarrow's Parquet reader, by record batch (a row group at a time at most on disk)."""

    def __init__(self, source: Source, layout: Layout):
        super().__init__(source, layout)
        self._file = pq.ParquetFile(source.path)
        self._batches = self._file.iter_batches(batch_size=4096)
        self._row, self._rows = 1, self._file.metadata.num_rows
        self.columns = Columns(self._file.schema_arrow.names, layout, text=False, where=source.path)

    def _next_chunk(self):
        batch = next(self._batches, None)
        if batch is None:
            return None
        numbers = list(range(self._row, self._row + batch.num_rows))
        self._row += batch.num_rows
        return pa.Table.from_batches([batch]), numbers, {}

    def _done(self) -> int:
        # Parquet is read by column chunk, not front to back: progress is the share of rows read.
        return round(self.source.size * (self._row - 1) / max(1, self._rows))

    def close(self) -> None:
        self._file.close()


class Images:
    """Image files, each one row: its bytes become the instance `{"b64": ...}`, as a client would send it,
    so that a file is converted (serving.json), limited and refused exactly as the API would."""

    def __init__(self, source: Source, layout: Layout, paths=None):
        self.source, self.layout = source, layout
        self._paths = iter(source.images if paths is None else paths)
        self._count = 0

    def read(self, limit: int) -> Block | None:
        paths = [path for _, path in zip(range(limit), self._paths)]
        if not paths:
            return None
        self._count += len(paths)
        return Block(self.source, paths, lambda: [_image(path) for path in paths], done=self._done())

    def skip(self, count: int) -> int:
        skipped = sum(1 for _ in zip(range(count), self._paths))
        self._count += skipped
        return skipped

    def _done(self) -> int:
        return self._count

    def close(self) -> None:
        pass


def _image(path: str):
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return InvalidInput(f"cannot read {path}: {exc.strerror or exc}")
    return {"b64": base64.b64encode(data).decode("ascii")}


class FileList(Images):
    """A text file (gzip or not) of image paths, one per line, read as it goes; a relative path is relative
    to the list's folder, so a list keeps working wherever the job runs from."""

    def __init__(self, source: Source, layout: Layout):
        self._stream, self._raw = open_binary(source.path)
        folder = os.path.dirname(source.path)
        paths = (os.path.join(folder, line.strip().decode(errors="replace")) for line in self._stream
                 if line.strip())
        super().__init__(source, layout, paths)

    def _done(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._stream.close()
        self._raw.close()
