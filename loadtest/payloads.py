"""Request bodies for the load, built once per process and reused, so the client's CPU goes to sending.

Instances are scikit-learn's bundled digits (no download) when the model takes 8x8x1 floats, else arrays
generated to the model's input shape and datatype; uploads are PNGs of the same instances.
"""
import base64
import io
from dataclasses import dataclass
from functools import cache

import numpy as np
import orjson
from PIL import Image

from loadtest.model import ServedModel

POOL = 64
"""Distinct bodies of each kind: variety for the server, a few milliseconds to build."""
BATCH_SIZES = (2, 4, 8)
"""Small batches, as clients that group a handful of items send them."""
TOP_K = 3
UPSCALE_UP_TO = 64
"""Uploads of inputs this small are sent 4x larger, as real pictures are, so the server resizes them."""


@cache
def digits() -> np.ndarray:
    """The bundled digits scaled as api/training.py trains on them: ink 0..16 to [0, 1], [n, 8, 8, 1]
    (not imported from there: it imports TensorFlow)."""
    from sklearn.datasets import load_digits
    return (load_digits().images / 16.0).astype("float32")[..., None]


def sample_instances(model: ServedModel, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` instances for the model: digits when it takes them, else values valid for its datatype."""
    if model.takes_digits:
        pool = digits()
        return pool[rng.integers(0, len(pool), count)]
    shape = (count, *model.instance_shape)
    if model.datatype.startswith("FP"):
        return rng.random(shape, dtype=np.float32)
    if model.datatype == "BOOL":
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, shape)  # small enough for any integer type, UINT8 included


def png_b64(instance: np.ndarray, color_mode: str) -> str:
    """An instance with values in [0, 1] as a base64 PNG of the given mode."""
    pixels = np.round(np.clip(instance, 0, 1) * 255).astype("uint8")
    if color_mode == "L":
        image = Image.fromarray(pixels.reshape(pixels.shape[:2]), mode="L")
    else:
        image = Image.fromarray(pixels.reshape(*pixels.shape[:2], 3), mode="RGB")
    if max(image.size) <= UPSCALE_UP_TO:
        image = image.resize((image.width * 4, image.height * 4), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def predict_body(rows: np.ndarray, top_k: int | None = None) -> bytes:
    """TensorFlow Serving's row format: {"instances": [...]}, with our `top_k` extension when asked."""
    body = {"instances": rows.tolist()}
    return orjson.dumps(body | {"top_k": top_k} if top_k else body)


def columnar_body(model: ServedModel, rows: np.ndarray) -> bytes:
    """TensorFlow Serving's columnar format: {"inputs": {"<input name>": [...]}}."""
    return orjson.dumps({"inputs": {model.input_name: rows.tolist()}})


def image_body(uploads: list[str], top_k: int | None) -> bytes:
    body = {"instances": [{"b64": upload} for upload in uploads]}
    return orjson.dumps(body | {"top_k": top_k} if top_k else body)


def v2_body(model: ServedModel, rows: np.ndarray) -> bytes:
    """KServe v2 JSON: the batch flattened in row-major order, its shape given alongside."""
    tensor = {"name": model.input_name, "shape": list(rows.shape), "datatype": model.datatype,
              "data": rows.reshape(-1).tolist()}
    return orjson.dumps({"inputs": [tensor]})


@dataclass(frozen=True)
class Body:
    rows: int
    """Instances in the body: a right answer holds as many predictions."""
    data: bytes


@dataclass(frozen=True)
class Payloads:
    one: list[Body]
    batches: list[Body]
    uploads: list[Body]
    """b64 PNGs with top_k; arrays with top_k when the model's input is no image."""
    columnar: list[Body]
    v2: list[Body]
    top_k: int | None

    @classmethod
    def build(cls, model: ServedModel, seed: int = 0) -> "Payloads":
        rng = np.random.default_rng(seed)
        top_k = min(TOP_K, model.classes) if model.classes else None
        singles = sample_instances(model, POOL, rng)
        batches = [sample_instances(model, int(rng.choice(BATCH_SIZES)), rng) for _ in range(POOL)]
        if model.color_mode:
            uploads = [Body(1, image_body([png_b64(row, model.color_mode)], top_k)) for row in singles]
        else:
            uploads = [Body(1, predict_body(row[None], top_k)) for row in singles]
        return cls(
            one=[Body(1, predict_body(row[None])) for row in singles],
            batches=[Body(len(rows), predict_body(rows)) for rows in batches],
            uploads=uploads,
            columnar=[Body(len(rows), columnar_body(model, rows)) for rows in batches],
            v2=[Body(1, v2_body(model, row[None])) for row in singles]
               + [Body(len(rows), v2_body(model, rows)) for rows in batches],
            top_k=top_k,
        )
