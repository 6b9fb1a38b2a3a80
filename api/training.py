"""Train the default model, `digits`, from scikit-learn's bundled digits data set (no download).

    keras-serving train-digits [STORE] [--version N]

Writes STORE/digits/<N>/ (default: models/digits/1/) holding `model.keras`, `labels.txt`,
`serving.json` (how images sent as base64 are turned into the model's input) and `examples/`, one
held-out image per digit for the demo page. Deterministic: the
same seed, data split and single-threaded ops give the same weights on every run.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from api.process.worker import native_stderr_to
from api.settings import Settings

# TensorFlow and Keras are imported where they are used: `keras-serving train-digits --help` needs neither.

SEED = 0
MIN_ACCURACY = 0.95

# Digits are 8x8 ink intensities 0..16 (0 = background). An 8-bit grey PNG of the same digit holds
# round(v / 16 * 255); dividing by 255 gives back the training scale. Box resize averages pixels,
# which is what downsampling a larger drawing of a digit to 8x8 needs.
SERVING = {
    "image": {"color_mode": "L", "resize": "box", "scale": 1 / 255, "offset": 0.0, "invert": False},
}


def held_out_split():
    """The data split the model is trained and scored on; tests reuse it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    return train_test_split(x, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target)


def build_model():
    """The default model: a small CNN, [n, 8, 8, 1] float32 ink in [0, 1] -> [n, 10] class probabilities."""
    import keras

    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(48, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="probabilities"),
    ], name="digits_cnn")


def train(out_dir: Path) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow's first import: no start-up chatter
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    x_train, x_test, y_train, y_test = held_out_split()
    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0, shuffle=True)
    accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    if accuracy < MIN_ACCURACY:
        raise SystemExit(f"digits: test accuracy {accuracy:.3f} is under {MIN_ACCURACY}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    (out_dir / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    (out_dir / "serving.json").write_text(json.dumps(SERVING, indent=2) + "\n")
    write_examples(out_dir / "examples", x_test, y_test)
    return accuracy


def write_examples(folder: Path, images, labels) -> list[Path]:
    """The first held-out image of each class as `folder/digit-<class>.png`, 8x8 8-bit grey: the example
    images the demo page offers (api/web/page.py). `images` [n, 8, 8, 1] float ink in [0, 1], `labels` [n]
    int classes. 8x8 is the model's own input size, so the PNG converts back (serving.json) to the exact
    values the model was scored on; the page scales it up for display."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for digit in sorted(set(labels.tolist())):
        image = images[int(np.flatnonzero(labels == digit)[0])].squeeze()
        path = folder / f"digit-{digit}.png"
        Image.fromarray(np.round(image * 255).astype("uint8"), mode="L").save(path)
        written.append(path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", default="models", type=Path)
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args(argv)
    out_dir = args.store / "digits" / str(args.version)
    settings = Settings()  # as in the workers: TensorFlow's start-up lines by SERVE_TF_LOG_LEVEL
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(settings.tf_log_level)
    if settings.tf_log_level == 3:
        native_stderr_to(settings.run_dir / "tensorflow.log")
    accuracy = train(out_dir)
    print(f"digits: held-out accuracy {accuracy:.4f}, written to {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
