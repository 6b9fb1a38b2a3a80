"""The model store on disk, laid out as TensorFlow Serving's: `<store>/<name>/<version>/`.

A version folder holds either a Keras v3 file (`model.keras`, or the only `*.keras` file) or a
SavedModel (`saved_model.pb` with its `variables/`), and optionally `labels.txt` (one label per
output class) and `serving.json` (how base64 images become the model's input, see `ImageSpec`).
`<store>/<name>/version_labels.json` names versions, as TensorFlow Serving's `version_labels`
(`{"stable": 1, "canary": 2}`), so that clients can pin a label while a new version rolls out.
Nothing here imports TensorFlow: the gunicorn master may read the store safely.
"""
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REFUSED_SUFFIXES = (".h5", ".hdf5")
"""Legacy HDF5 model files load without Keras's safe mode (CVE-2025-9905): never accepted."""


class ImageSpec(BaseModel):
    """How an image sent as `{"b64": ...}` becomes one instance: value = (pixel or 255 - pixel) * scale + offset."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    color_mode: Literal["L", "RGB"] = "RGB"
    resize: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "bilinear"
    scale: float = 1 / 255
    offset: float | tuple[float, ...] = 0.0
    invert: bool = False
    channel_order: Literal["RGB", "BGR"] = "RGB"


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    image: ImageSpec = Field(default_factory=ImageSpec)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path
    format: Literal["keras", "saved_model"]
    labels: tuple[str, ...] = ()
    serving: ServingConfig = field(default_factory=ServingConfig)


class StoreError(Exception):
    """The store holds no usable model at the place asked for."""


def list_versions(store: Path, name: str) -> list[int]:
    """Version numbers present for a model, oldest first."""
    folder = store / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"[0-9]+", p.name))


def select_versions(available: list[int], policy: str) -> list[int]:
    """Apply a version policy (`all`, `latest`, `latest:N`, `1,3`) to the versions on disk."""
    if policy == "all":
        return list(available)
    if policy.startswith("latest"):
        count = int(policy.partition(":")[2] or 1)
        return list(available[-count:])
    wanted = {int(v) for v in policy.split(",")}
    missing = wanted - set(available)
    if missing:
        raise StoreError(f"versions {sorted(missing)} asked for are not in the store")
    return sorted(wanted)


def read_version(store: Path, name: str, version: int) -> ModelVersion:
    folder = store / name / str(version)
    fmt, path = _model_file(folder)
    labels_file = folder / "labels.txt"
    labels = tuple(line.strip() for line in labels_file.read_text().splitlines() if line.strip()) \
        if labels_file.is_file() else ()
    return ModelVersion(name, version, path, fmt, labels, _serving_config(folder / "serving.json"))


def _model_file(folder: Path) -> tuple[Literal["keras", "saved_model"], Path]:
    if (folder / "saved_model.pb").is_file():
        return "saved_model", folder
    refused = [p.name for p in folder.iterdir() if p.suffix.lower() in REFUSED_SUFFIXES]
    keras_files = sorted(folder.glob("*.keras"))
    if (folder / "model.keras").is_file():
        return "keras", _keras_archive(folder / "model.keras")
    if len(keras_files) == 1:
        return "keras", _keras_archive(keras_files[0])
    if refused:
        raise StoreError(f"{folder}: {refused[0]} is an HDF5 model, which loads without safe mode; "
                         "re-save it as .keras")
    raise StoreError(f"{folder}: no model.keras, single *.keras file or saved_model.pb")


def _keras_archive(path: Path) -> Path:
    """A `.keras` model must be the zip Keras v3 writes. Of anything else under that name (an HDF5 file
    renamed, the archive unzipped) Keras says only "file not found" or "is a directory": refused here,
    with the reason."""
    if not zipfile.is_zipfile(path):
        raise StoreError(f"{path}: not a Keras v3 archive (the zip model.save('model.keras') writes); "
                         "HDF5 files and unzipped folders are refused")
    return path


def _serving_config(path: Path) -> ServingConfig:
    if not path.is_file():
        return ServingConfig()
    try:
        return ServingConfig.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise StoreError(f"{path}: {exc}") from exc


LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
"""A version label: a letter, then letters, digits, `_`, `.` or `-` (64 at most), never a number, so that
`/labels/<label>` and `/versions/<n>` cannot be confused."""


def read_version_labels(store: Path, name: str) -> dict[str, int]:
    """`<store>/<name>/version_labels.json`: label -> version number; {} when the file is absent.
    StoreError names the file and what is wrong (not an object, a bad label, a version that is not a
    positive integer)."""
    path = store / name / "version_labels.json"
    if not path.is_file():
        return {}
    try:
        labels = json.loads(path.read_text())
    except ValueError as exc:
        raise StoreError(f"{path}: not JSON ({exc})") from None
    if not isinstance(labels, dict):
        raise StoreError(f"{path}: must be an object of label: version, such as {{\"stable\": 1}}")
    for label, version in labels.items():
        if not LABEL.fullmatch(label):
            raise StoreError(f"{path}: {label!r} is not a version label (a letter, then letters, digits, _ . -)")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise StoreError(f"{path}: label {label!r} must name a version number, got {version!r}")
    return dict(labels)
