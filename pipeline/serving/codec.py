"""Images in and out of the served model: base64-encoded image files <-> uint8 RGB arrays.

The REST payload is `{"dataframe_records": [{"image": "<base64 PNG, JPEG, TIFF, ...>"}, ...]}` and
the answer carries base64 PNG in the same column, so any accepted size travels unchanged.

Decoding is the ingest decoder (pipeline.ingestion.decode.decode_photo), never scaled down: 16-bit
scaled to 8 bits, alpha composited on white, EXIF orientation and ICC profiles applied, float
and 32-bit integer pixels refused. A photo is seen by the model the same way whether it came
through ingest, `raincheck predict` or the HTTP server.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

IMAGE_COLUMN = "image"
ERROR_COLUMN = "error"
# The served model refuses larger images (width * height). Measured with the default model
# (masked_prior) on 2 shared CPU cores (benchmarks/README.md, "Serving"): 1536² (2x2 tiles of 1024)
# answers in about 16 s within 1.3 GB peak RSS, 2048² (3x3 tiles) in 34-54 s, too close to the
# scoring server's 60 s request timeout, after which it answers 504 while the computation runs on.
# Requests are computed one at a time (pyfunc._COMPUTE): three queued 1536² requests fit in 60 s.
SERVING_MAX_PIXELS = 1536 * 1536
SERVING_LIMIT_NAME = "the serving limit max_pixels"  # how a refusal names it (`raincheck predict`: ingest.max_pixels)
# Bigger than any photo: decode_photo never scales a request down (the answer keeps its size).
NO_SCALING = 1 << 30


class PayloadError(ValueError):
    """A request the model cannot read; the message says what was expected."""


def encode_png(image: np.ndarray) -> str:
    """uint8 (H, W, 3) RGB in [0, 255] -> base64 text of a PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_file(data: bytes) -> str:
    """Bytes of an image file -> the base64 text a request carries in its `image` column."""
    return base64.b64encode(data).decode("ascii")


def decode_image(text: object, max_pixels: int = SERVING_MAX_PIXELS, what: str = f"column '{IMAGE_COLUMN}'",
                 limit_name: str = SERVING_LIMIT_NAME) -> np.ndarray:
    """base64 text of an image file -> uint8 (H, W, 3) RGB in [0, 255], decoded as ingest decodes.

    Raises PayloadError "`what`: reason" for what is not base64 and for anything ingest would
    reject (not an image, corrupt, float pixels, more than `max_pixels` pixels, which the message
    calls `limit_name`)."""
    from pipeline.ingestion.decode import DecodeError, decode_photo

    if not isinstance(text, (str, bytes)):
        raise PayloadError(f"{what}: expected base64 text of an image file (PNG, JPEG, TIFF, ...), got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{what}: not valid base64 (expected base64 text of an image file: PNG, JPEG, TIFF, ...)") from None
    try:
        return decode_photo(raw, max_pixels=max_pixels, short_side=NO_SCALING).image
    except DecodeError as error:
        reason = str(error).replace(f"ingest.max_pixels={max_pixels}", f"{limit_name}={max_pixels}")
        raise PayloadError(f"{what}: {reason}") from None
