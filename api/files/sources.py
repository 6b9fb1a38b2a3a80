"""What the command line's INPUT arguments name: files of rows, each with its format, read as they are.

An INPUT is a file (its format from its name: `.jsonl`/`.ndjson`/`.json`, `.csv`, `.parquet`/`.pq`, an
image `.png`/`.jpg`/`.jpeg`, or `.txt`/`.lst` listing image paths; a trailing `.gz` is ignored), a
folder (its images, in name order) or a glob pattern (quoted, so that the shell leaves it to us; its
matches in name order). Compression is told by content, not by name: a gzip file is read through
gzip whatever it is called. Nothing is read here but names, sizes and two magic bytes.
"""
import glob
import gzip
import os
from dataclasses import dataclass, field

FORMATS = ("jsonl", "csv", "parquet", "images", "file-list")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
             ".pq": "parquet", ".txt": "file-list", ".lst": "file-list",
             **{suffix: "images" for suffix in IMAGE_SUFFIXES}}
GZIP_MAGIC = b"\x1f\x8b"


class UsageError(Exception):
    """The command line names something that cannot be run (exit status 2)."""


@dataclass(frozen=True)
class Source:
    """One input: `path` (a file of rows, or for `images` the folder, glob or file they came from) in
    `format`; `images` holds the image paths of an `images` source, in order. `size` is the unit of
    progress: bytes for a file of rows, one per image."""
    path: str
    format: str
    images: tuple[str, ...] = field(default=(), repr=False)

    @property
    def size(self) -> int:
        return len(self.images) if self.format == "images" else os.path.getsize(self.path)

    def identity(self) -> dict:
        """What --resume compares: the same files, unchanged (size and modification time, ns)."""
        if self.format == "images":
            return {"path": self.path, "format": self.format, "images": len(self.images)}
        stat = os.stat(self.path)
        return {"path": self.path, "format": self.format, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def expand(inputs: list[str], input_format: str = "auto") -> list[Source]:
    """The sources INPUT arguments name, in the order given (a folder's or a glob's files in name order;
    images side by side grouped into one source). UsageError for a name that matches nothing or whose
    format cannot be told (then --input-format says it)."""
    sources: list[Source] = []
    for name in inputs:
        if os.path.isdir(name):
            images = sorted(os.path.join(name, entry) for entry in os.listdir(name)
                            if entry.lower().endswith(IMAGE_SUFFIXES))
            if not images:
                raise UsageError(f"{name}: a folder with no .png, .jpg or .jpeg file in it")
            sources.append(Source(name, "images", tuple(images)))
            continue
        matches = [name] if os.path.exists(name) else sorted(glob.glob(name))
        if not matches:
            raise UsageError(f"{name}: no such file, folder or matching files")
        files = [Source(path, input_format if input_format != "auto" else _format_of(path)) for path in matches
                 if os.path.isfile(path)]
        images = tuple(s.path for s in files if s.format == "images")
        if images:
            sources.append(Source(name, "images", images))
        sources += [s for s in files if s.format != "images"]
    return sources


def _format_of(path: str) -> str:
    name = path.lower().removesuffix(".gz")
    suffix = os.path.splitext(name)[1]
    if suffix not in _SUFFIXES:
        raise UsageError(f"{path}: cannot tell its format from its name; say it with --input-format "
                         f"({', '.join(FORMATS)})")
    return _SUFFIXES[suffix]


def is_gzip(path: str) -> bool:
    with open(path, "rb") as file:
        return file.read(2) == GZIP_MAGIC


def open_binary(path: str):
    """`(stream, raw)`: the file's bytes (decompressed when it is gzip) and the file itself, whose
    `tell()` says how far into the file on disk reading has got (for progress)."""
    raw = open(path, "rb")
    if raw.read(2) == GZIP_MAGIC:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    raw.seek(0)
    return raw, raw
