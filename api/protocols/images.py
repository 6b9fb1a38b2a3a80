"""Base64 PNG or JPEG to one model instance, as the model's `serving.json` declares (see `ImageSpec`)."""
import base64
import binascii
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from api.errors import InvalidInput, PayloadTooLarge
from api.model.store import ImageSpec

FORMATS = ("PNG", "JPEG")
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR, "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
}


# Base64 as people produce it: GNU `base64` and `openssl base64` wrap lines (76 and 64 characters),
# `base64.urlsafe_b64encode` and JWT-style encoders use `-` and `_`, and many strip the `=` padding.
# All of these mean the same bytes (RFC 4648 sections 4 and 5); anything else is still refused.
_NORMALISE = str.maketrans({"-": "+", "_": "/", "\n": None, "\r": None, " ": None, "\t": None})


def decode_b64(value, what: str) -> bytes:
    """The bytes of a `{"b64": ...}` value: standard or URL-safe alphabet, with or without padding and
    line breaks. InvalidInput (400) names `what` for anything else (other characters, a length no
    base64 has, padding in the middle)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what}: 'b64' must be a base64 string")
    text = value.translate(_NORMALISE).rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what}: invalid base64 ({exc})") from None


def image_to_instance(data: bytes, spec: ImageSpec, shape: tuple[int | None, ...],
                      max_pixels: int, what: str) -> np.ndarray:
    """Decode, convert, resize and scale an image to `shape` (height, width[, channels])."""
    height, width, channels = _target(shape, spec, what)
    image = _open(data, max_pixels, what)
    try:
        image.draft(spec.color_mode, (width, height))  # JPEG: decode at a reduced scale, cheaper
        image = image.convert(spec.color_mode)
        if image.size != (width, height):
            image = image.resize((width, height), _RESAMPLE[spec.resize])
        pixels = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        raise InvalidInput(f"{what}: image data cannot be decoded ({exc})") from None
    if spec.invert:
        pixels = 255.0 - pixels
    if pixels.ndim == 3 and spec.channel_order == "BGR":
        pixels = pixels[..., ::-1]
    pixels = pixels * np.float32(spec.scale) + np.asarray(spec.offset, dtype=np.float32)
    return pixels.reshape(height, width, channels) if channels else pixels


def _target(shape, spec: ImageSpec, what: str) -> tuple[int, int, int | None]:
    """(height, width, channels); channels None for a 2-D input, which only a grey image can feed."""
    want = 1 if spec.color_mode == "L" else 3
    channels = (shape[2] or want) if len(shape) == 3 else None  # a None channel dimension takes any
    if len(shape) not in (2, 3) or None in shape[:2] or (channels or 1) != want:
        raise InvalidInput(f"{what}: this model's input {list(shape)} cannot be fed from a "
                           f"{spec.color_mode} image")
    return shape[0], shape[1], channels


def _open(data: bytes, max_pixels: int, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"{what}: image has too many pixels (limit {max_pixels})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidInput(f"{what}: not a PNG or JPEG image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{what}: image is {width}x{height} = {width * height} pixels, over the "
                              f"limit of {max_pixels}")
    return image
