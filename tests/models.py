"""Models built for tests: a slow one, whose inference time a request controls by its batch size; and
the two steps every test of a model of its own takes: save it into a store, serve it in-process."""
from pathlib import Path

import keras

from api.http.app import create_app, registry_of
from api.settings import Settings


def save_model(model, store: Path, name: str, version: int = 1):
    """`model` saved as `<store>/<name>/<version>/model.keras`; returns the model."""
    folder = store / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    return model


def serve(store: Path, tmp_path_factory, name: str, **overrides):
    """The app serving `name` from `store`, loaded and warm (warm-up at batch 1 only: quick)."""
    app = create_app(Settings(model_store=store, model_name=name, run_dir=tmp_path_factory.mktemp("run"),
                              warmup_batches=(1,), **overrides))
    registry = registry_of(app)
    registry.load()
    assert registry.ready, registry.error
    return app


def build_slow_model(store: Path, name: str = "slow") -> Path:
    """~6 ms of CPU per instance on one core (a 128x128 convolution stack), few parameters, digits-shaped input."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.UpSampling2D(16),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ], name=name)
    folder = store / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    return folder


def build_heavy_model(store: Path, name: str, version: int, convolutions: int) -> Path:
    """Seconds per instance, by design: `convolutions` 3x3, 128-channel convolutions over 256x256 (each
    about 9.7 GMAC), with digits' input and output. Its weights stay small (0.6 MB per convolution)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.UpSampling2D(32),
        *[keras.layers.Conv2D(128, 3, padding="same", activation="relu") for _ in range(convolutions)],
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ], name=name)
    folder = store / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    return folder


def convolutions_lasting(seconds: float) -> int:
    """How many of build_heavy_model's convolutions one instance needs to take about `seconds` here
    (measured in this process, which has the cores a single worker gets)."""
    import time

    import numpy as np
    import tensorflow as tf
    probe = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.UpSampling2D(32),
                              *[keras.layers.Conv2D(128, 3, padding="same") for _ in range(3)]])
    call = tf.function(probe).get_concrete_function(tf.TensorSpec((1, 8, 8, 1), tf.float32))
    one = tf.constant(np.zeros((1, 8, 8, 1), "float32"))
    call(one)
    started = time.perf_counter()
    for _ in range(3):
        call(one)
    per_convolution = (time.perf_counter() - started) / 3 / 3
    return max(4, min(200, round(seconds / per_convolution)))
