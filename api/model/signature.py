"""What a served model version takes and gives, without TensorFlow: the type the protocol parsers are
written against. The runtime (api/runtime.py) reads it off the compiled model; tests build it by hand."""
from dataclasses import dataclass, field

import numpy as np

from api.model.store import ImageSpec

STRING = np.dtype(object)
"""How a string tensor (TensorFlow's tf.string) is held: a numpy object array of `bytes`, as TensorFlow's
own `.numpy()` gives it. The protocols name it DT_STRING (TensorFlow Serving) and BYTES (v2)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the signature: its name, numpy dtype and shape, batch dimension first, None where
    any size fits (TensorFlow's -1). A string tensor's dtype is `STRING` (object: its elements `bytes`)."""
    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def is_string(self) -> bool:
        """A tf.string tensor: its values are bytes (numpy object arrays), not numbers."""
        return self.dtype == STRING

    @property
    def instance_shape(self) -> tuple[int | None, ...]:
        """The shape of one instance: the shape without its batch dimension."""
        return self.shape[1:]


@dataclass(frozen=True)
class ModelSignature:
    """A model version's serving signature (TensorFlow Serving's `serving_default`): its inputs and
    outputs by name, in the model's order, the class labels of its first output (may be empty), and how
    an image instance (`{"b64": ...}`) becomes an input (from the version's serving.json)."""
    name: str
    version: int
    format: str  # "keras" or "saved_model"
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    labels: tuple[str, ...] = ()
    image: ImageSpec = field(default_factory=ImageSpec)

    @property
    def input(self) -> TensorInfo:
        """The one input of a single-input model; ValueError for a model with several."""
        if len(self.inputs) != 1:
            raise ValueError(f"model '{self.name}' has {len(self.inputs)} inputs, not one")
        return next(iter(self.inputs.values()))
