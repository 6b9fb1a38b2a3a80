"""The models and request bodies the benchmark uses, all made locally (no download).

- digits: the default model, trained by api/training.py; one held-out digit per request.
- resnet50: `keras.applications.ResNet50(weights=None)`, random weights: ImageNet-sized compute with
  nothing fetched. Sent as JSON instances (224x224x3 floats, ~1.3 MB) and as a base64 JPEG.
"""
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESNET_SERVING = {"image": {"color_mode": "RGB", "resize": "bilinear", "scale": 1 / 255, "offset": 0.0}}


def digits_store(store: Path) -> Path:
    if not (store / "digits" / "1" / "model.keras").exists():
        subprocess.run([sys.executable, "-m", "api.cli", "train-digits", str(store)], cwd=ROOT, check=True)
    return store


def resnet_store(store: Path) -> Path:
    """Built in a child process so that the driver never imports TensorFlow."""
    target = store / "resnet50" / "1"
    if not (target / "model.keras").exists():
        code = ("import os, sys, keras; keras.utils.set_random_seed(0); "
                "os.makedirs(sys.argv[1], exist_ok=True); "
                "keras.applications.ResNet50(weights=None).save(os.path.join(sys.argv[1], 'model.keras'))")
        subprocess.run([sys.executable, "-c", code, str(target)], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        (target / "serving.json").write_text(json.dumps(RESNET_SERVING))
    return store


def digits_body(path: Path) -> Path:
    from sklearn.datasets import load_digits
    image = (load_digits().images[0] / 16.0).reshape(8, 8, 1)
    path.write_bytes(json.dumps({"instances": [image.round(4).tolist()]}).encode())
    return path


def resnet_json_body(path: Path) -> Path:
    pixels = np.random.default_rng(0).random((224, 224, 3)).round(3)
    path.write_bytes(json.dumps({"instances": [pixels.tolist()]}).encode())
    return path


def resnet_jpeg_body(path: Path) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    # a smooth picture, not noise: JPEG sizes like a photograph's (noise would not compress)
    y, x = np.mgrid[0:224, 0:224]
    picture = np.stack([(x + y) % 256, (x * 2) % 256, (255 - y) % 256], axis=-1).astype(np.uint8)
    picture = np.clip(picture + rng.integers(0, 8, picture.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture, "RGB").save(buffer, format="JPEG", quality=90)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    path.write_bytes(json.dumps({"instances": [{"b64": encoded}]}).encode())
    return path
