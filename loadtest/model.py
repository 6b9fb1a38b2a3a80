"""The served model as the load sees it: its one input and output, read from the server's own metadata."""
from dataclasses import dataclass

FREE_DIMENSION = 8
"""The size given to a dimension other than the batch that the model leaves free (-1)."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    input_name: str
    datatype: str
    """The input's KServe v2 datatype, e.g. FP32."""
    instance_shape: tuple[int, ...]
    """One instance: the input's shape less its batch dimension."""
    classes: int | None
    """K when the output is [batch, K], so `top_k` may ask for up to K labels; None otherwise."""
    color_mode: str | None
    """"L" or "RGB" when the server can make an instance from a PNG, None when the input is no image."""

    @property
    def takes_digits(self) -> bool:
        """scikit-learn's digits fit any 8x8x1 float input: the digits model, or the slow one of the tests."""
        return self.instance_shape == (8, 8, 1) and self.datatype.startswith("FP")


def from_metadata(v2: dict, v1: dict | None = None) -> ServedModel:
    """`GET /v2/models/<name>` (and `GET /v1/models/<name>/metadata` for how the server decodes images)."""
    if len(v2["inputs"]) != 1:
        raise ValueError(f"model {v2['name']!r} has {len(v2['inputs'])} inputs; the load drives one input")
    tensor = v2["inputs"][0]
    shape = tuple(FREE_DIMENSION if size < 0 else size for size in tensor["shape"][1:])
    outputs = v2.get("outputs") or []
    output_shape = outputs[0]["shape"] if len(outputs) == 1 else []
    classes = output_shape[1] if len(output_shape) == 2 and output_shape[1] > 0 else None
    return ServedModel(name=v2["name"], input_name=tensor["name"], datatype=tensor["datatype"],
                       instance_shape=shape, classes=classes, color_mode=_color_mode(shape, v1))


def _color_mode(shape: tuple[int, ...], v1: dict | None) -> str | None:
    """The mode the server converts uploads to (its serving.json, shown in our metadata's `runtime`), when
    an image of that mode can fill the input; servers without that block get the mode the channels imply."""
    declared = ((v1 or {}).get("runtime") or {}).get("image", {}).get("color_mode")
    if len(shape) == 2:
        return "L" if declared in (None, "L") else None
    if len(shape) == 3:
        implied = {1: "L", 3: "RGB"}.get(shape[2])
        return implied if declared in (None, implied) else None
    return None
