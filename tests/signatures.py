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
