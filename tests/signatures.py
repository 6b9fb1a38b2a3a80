"""Model signatures built by hand, for testing the protocols without TensorFlow or a model."""
import numpy as np

from api.model.signature import ModelSignature, TensorInfo
from api.model.store import ImageSpec


def signature_of(instance_shape=(8, 8, 1), dtype="float32", input_name="image", *,
                 labels: tuple[str, ...] = (), image: ImageSpec | None = None) -> ModelSignature:
    """A one-input model of that instance shape and dtype with digits' output: `probs`, float32 [n, 10]."""
    return ModelSignature(
        name="digits", version=1, format="keras",
        inputs={input_name: TensorInfo(input_name, np.dtype(dtype), (None, *instance_shape))},
        outputs={"probs": TensorInfo("probs", np.dtype("float32"), (None, 10))},
        labels=labels, image=image or ImageSpec())


def two_input_signature(image_shape=(8, 8, 1), image_dtype="float32", *, other_shape=(2,), other_dtype="int32",
                        image: ImageSpec | None = None) -> ModelSignature:
    """A two-input, two-output model: `image` and `other` in (that order), `probs` float32 [n, 10] and
    `extra` float32 [n, 3] out."""
    return ModelSignature(
        name="digits", version=1, format="keras",
        inputs={"image": TensorInfo("image", np.dtype(image_dtype), (None, *image_shape)),
                "other": TensorInfo("other", np.dtype(other_dtype), (None, *other_shape))},
        outputs={"probs": TensorInfo("probs", np.dtype("float32"), (None, 10)),
                 "extra": TensorInfo("extra", np.dtype("float32"), (None, 3))},
        image=image or ImageSpec())
