"""Images in and out of the served model: base64-encoded PNG/JPEG bytes <-> uint8 RGB arrays.

The REST payload is `{"dataframe_records": [{"image": "<base64 PNG or JPEG>"}, ...]}` and the
answer carries base64 PNG in the same column, so any image size travels unchanged.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

IMAGE_COLUMN = "image"


class PayloadError(ValueError):
    """A request the model cannot read; the message says what was expected."""


def encode_png(image: np.ndarray) -> str:
    """uint8 HxWx3 RGB -> base64 text of a PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def read_image(data: bytes, max_pixels: int = 64_000_000, what: str = "image") -> np.ndarray:
    """Bytes of a PNG/JPEG/... file -> uint8 HxWx3 RGB (EXIF orientation applied); PayloadError otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise PayloadError(f"{what}: {img.width}x{img.height} exceeds {max_pixels} pixels")
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB")).copy()
    except (UnidentifiedImageError, OSError):
        raise PayloadError(f"{what} does not decode to an image (PNG or JPEG expected)") from None


def decode_image(text: object, max_pixels: int = 64_000_000) -> np.ndarray:
    """base64 text of an image file -> uint8 HxWx3 RGB; PayloadError on anything else."""
    if not isinstance(text, (str, bytes)):
        raise PayloadError(f"column '{IMAGE_COLUMN}' must hold base64 text of a PNG/JPEG, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"column '{IMAGE_COLUMN}' is not valid base64") from None
    return read_image(raw, max_pixels, what=f"column '{IMAGE_COLUMN}'")
