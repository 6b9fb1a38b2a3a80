"""The output folder: prediction shards, errors.jsonl and the manifest that makes a run resumable.

    DIR/predictions-00000.jsonl   rows 0 .. shard_rows-1 of the input (all inputs, in order), one line per
    DIR/predictions-00001.jsonl   good row; `.parquet` with --output-format parquet
    DIR/errors.jsonl              one line per bad row, in input order
    DIR/manifest.json             the job, and per finished shard its counts and errors.jsonl's length
    DIR/_SUCCESS                  once every shard is in (what a downstream job waits for)

A shard is written as `<name>.partial`, flushed to disk, then renamed into place, and only then entered
in the manifest (itself replaced by rename). So after a crash at any point the manifest names shards
that are whole on disk, and `--resume` deletes whatever came after them (partials, a shard renamed but
not yet entered, errors.jsonl's tail past the last entered shard) and starts at the next shard's first
row. Shards cover fixed ranges of input rows, so a resumed run writes the bytes an uninterrupted one would.
"""
import json
import os
from pathlib import Path

from api.files.sources import UsageError

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SUCCESS = "_SUCCESS"


def shard_name(index: int, fmt: str) -> str:
    return f"predictions-{index:05d}.{fmt}"


class Output:
    """DIR for one job. `job`: what --resume must find unchanged (inputs, model, options); `resume`: a
    manifest there is continued, else DIR must hold no earlier output (UsageError otherwise).
    `parquet_schema`: the pyarrow schema of --output-format parquet's shards."""

    def __init__(self, folder: Path, fmt: str, job: dict, resume: bool, parquet_schema=None):
        self.folder, self.fmt, self.job, self.schema = Path(folder), fmt, job, parquet_schema
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self._read_manifest()
        if manifest is not None and not resume:
            raise UsageError(f"{self.folder} holds an earlier run ({MANIFEST}): pass --resume to continue it, "
                             "or choose an empty folder")
        if manifest is not None and manifest["job"] != job:
            changed = sorted(k for k in {*job, *manifest["job"]} if job.get(k) != manifest["job"].get(k))
            raise UsageError(f"{self.folder} holds a run of another job ({', '.join(changed)} differ): "
                             "resume it with the same inputs, model and options, or choose an empty folder")
        if manifest is None and any(p.name.startswith("predictions-") or p.name == ERRORS
                                    for p in self.folder.iterdir()):
            raise UsageError(f"{self.folder} holds predictions but no {MANIFEST}: not a run this job can resume")
        self.shards: list[dict] = manifest["shards"] if manifest else []
        self.complete = bool(manifest and manifest.get("complete"))
        self._clean()
        self._errors = open(self.folder / ERRORS, "ab")
        self._shard = None  # the shard being written: (index, partial path, file or ParquetWriter)
        if manifest is None:
            self._write_manifest()

    # -- totals of the shards already in, for the error rate and the summary ------------------------
    def totals(self) -> dict:
        return {key: sum(shard[key] for shard in self.shards) for key in ("rows", "predicted", "failed")}

    # -- writing ----------------------------------------------------------------------------------
    def write(self, index: int, predictions, errors: list[bytes]) -> None:
        """Append to shard `index` (opened on first use): JSON lines (bytes) or a pyarrow table."""
        if self._shard is None or self._shard[0] != index:
            self._open(index)
        if self.fmt == "parquet":
            if predictions.num_rows:
                self._shard[2].write_table(predictions)
        elif predictions:
            self._shard[2].write(b"".join(predictions))
        if errors:
            self._errors.write(b"".join(errors))

    def commit(self, index: int, counts: dict) -> None:
        """Shard `index` is whole: on disk, renamed into place, entered in the manifest (in this order)."""
        if self._shard is None or self._shard[0] != index:
            self._open(index)
        _, partial, handle = self._shard
        if self.fmt == "parquet":
            handle.close()
            _fsync(partial)
        else:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._errors.flush()
        os.fsync(self._errors.fileno())
        os.replace(partial, self.folder / shard_name(index, self.fmt))
        self._shard = None
        self.shards.append({"shard": index, "file": shard_name(index, self.fmt), **counts,
                            "errors_bytes": self._errors.tell()})
        self._write_manifest()

    def abandon(self) -> None:
        """Drop the shard being written (a stop that is not at a shard's end: --resume redoes it)."""
        if self._shard is not None:
            self._shard[2].close()
            self._shard[1].unlink(missing_ok=True)
            self._shard = None

    def finish(self, summary: dict, complete: bool) -> None:
        self.abandon()
        self._errors.close()
        self.complete = complete
        self._write_manifest(summary)
        if complete:
            (self.folder / SUCCESS).touch()

    # -- internals --------------------------------------------------------------------------------
    def _open(self, index: int) -> None:
        partial = self.folder / (shard_name(index, self.fmt) + ".partial")
        if self.fmt == "parquet":
            import pyarrow.parquet as pq
            handle = pq.ParquetWriter(partial, self.schema)
        else:
            handle = open(partial, "wb")
        self._shard = (index, partial, handle)

    def _clean(self) -> None:
        """Everything past the last shard the manifest names goes: it is redone from its first row."""
        done = {shard["file"] for shard in self.shards}
        for path in self.folder.iterdir():
            if path.name.endswith(".partial") or (path.name.startswith("predictions-") and path.name not in done):
                path.unlink()
        if not self.complete:
            (self.folder / SUCCESS).unlink(missing_ok=True)
        errors = self.folder / ERRORS
        if errors.exists():
            with open(errors, "r+b") as file:
                file.truncate(self.shards[-1]["errors_bytes"] if self.shards else 0)

    def _read_manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise UsageError(f"{path}: not a manifest this job wrote ({exc})") from None

    def _write_manifest(self, summary: dict | None = None) -> None:
        document = {"job": self.job, "complete": self.complete, "shards": self.shards}
        if summary is not None:
            document["summary"] = summary
        temporary = self.folder / (MANIFEST + ".tmp")
        temporary.write_text(json.dumps(document, indent=1) + "\n")
        _fsync(temporary)
        os.replace(temporary, self.folder / MANIFEST)
        _fsync(self.folder)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
