"""Decode one image file, whatever its flavour, into the pool's format: uint8 RGB, scaled down once.

Handled the way an image viewer would show the file: EXIF orientation applied, 16-bit scaled to
8 bits, greyscale and palette expanded to RGB, transparency composited on white, CMYK and other
colour-managed files converted to sRGB through their embedded ICC profile. Files that cannot be
used raise :class:`DecodeError` with a short reason for rejected.csv: empty, not an image,
truncated or corrupt, more pixels than `ingest.max_pixels` (checked from the header, before any
pixel is decoded), or an unsupported pixel format.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

# Pillow's modes for 16-bit grey. "I" (32-bit signed) also holds 16-bit PGM/PNM; a 32-bit integer
# TIFF is refused in decode_photo, and "I" values outside 0..65535 in to_rgb8.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class DecodeError(ValueError):
    """A file that cannot become a pool image; str(error) is the reason written to rejected.csv."""


@dataclass(frozen=True)
class Decoded:
    """A decoded photo: `image` uint8 (H, W, 3) RGB in [0, 255]; orig_* as displayed (after EXIF)."""

    image: np.ndarray
    orig_width: int
    orig_height: int


def decode_photo(data: bytes, *, max_pixels: int, short_side: int) -> Decoded:
    """Decode an encoded image to uint8 (H, W, 3) RGB with min(H, W) <= short_side.

    Raises DecodeError (with the reason) for anything that is not a usable picture.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    with _pixel_limit(max_pixels):
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise DecodeError("not an image (no format Pillow can read)") from None
        except Image.DecompressionBombError:
            raise DecodeError(f"too large: more than 2 x ingest.max_pixels={max_pixels} pixels") from None
        except DECODE_ERRORS as error:
            raise DecodeError(f"corrupt header: {error}") from None
        width, height = image.size
        bits = _tiff_bits(image)
        if image.mode == "I" and bits > 16:
            # Its range could be anything up to 2**32: scaling it as 16-bit clipped 99 % to white.
            raise DecodeError(f"{bits}-bit integer pixels (TIFF): value range unknown; save as 8 or 16 bit")
        if width * height > max_pixels:
            raise DecodeError(
                f"too large: {width}x{height} = {width * height} pixels > ingest.max_pixels={max_pixels}"
            )
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except DECODE_ERRORS as error:
            raise DecodeError(f"truncated or corrupt image data: {error}") from None
    rgb = to_rgb8(image)
    orig_width, orig_height = rgb.size
    rgb = scale_down(rgb, short_side)
    return Decoded(np.asarray(rgb, dtype=np.uint8).copy(), orig_width, orig_height)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow image -> mode "RGB" (8 bits per channel), as a colour-managed viewer shows it."""
    mode = image.mode
    if mode == "F":
        raise DecodeError("floating-point pixels (mode F): value range unknown; save as 8 or 16 bit")
    if mode in SIXTEEN_BIT_MODES:
        # 16-bit grey: 65535 -> 255 (Pillow's own convert("L") would clip instead of scaling).
        values = np.asarray(image, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DecodeError(f"integer pixels outside 0..65535 (mode {mode}): not 16-bit; save as 8 or 16 bit")
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    icc = image.info.get("icc_profile")
    if icc and mode in ("RGB", "CMYK", "L"):
        with contextlib.suppress(ImageCms.PyCMSError, OSError, ValueError):
            # Through the embedded profile to sRGB: CMYK and wide-gamut photos look as intended.
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise DecodeError(f"unsupported pixel format (mode {mode}): {error}") from None


def _tiff_bits(image: Image.Image) -> int:
    """Largest BitsPerSample a TIFF declares (0 for other formats or when it declares none)."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or tags is None:
        return 0
    bits = tags.get(258, 0)  # 258 = BitsPerSample: one value, or one per channel
    return max(bits) if isinstance(bits, tuple) and bits else int(bits or 0)


def scale_down(image: Image.Image, short_side: int) -> Image.Image:
    """Shrink (never enlarge) so the short side is exactly `short_side`; Lanczos, deterministic."""
    width, height = image.size
    if min(width, height) <= short_side:
        return image
    scale = short_side / min(width, height)
    if width <= height:
        size = (short_side, max(1, round(height * scale)))
    else:
        size = (max(1, round(width * scale)), short_side)
    return image.resize(size, Image.Resampling.LANCZOS)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Make Pillow's own bomb check follow `max_pixels` (it errors above 2x), then restore it."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x Pillow only warns; decode_photo rejects those itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous
