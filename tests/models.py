"""Models built for tests: a slow one, whose inference time a request controls by its batch size."""
from pathlib import Path

import keras


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
