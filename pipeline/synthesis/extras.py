"""Opt-in degradations beyond the authors' rain recipe, each a named component of a RainConfig.

The default rain (the presets, any config without `extras`) never goes through this module's
effects; they exist to probe robustness to conditions the recipe does not model.
"""

from __future__ import annotations


def add_haze(image, strength, airlight, white: float = 1.0):
    """Veiling term ("haze"): blend a uniform grey atmospheric light into the image.

    image: float array or tensor in [0, white] (e.g. float32 NCHW in [0,1], or HxWx3 in [0,255]);
    strength t in [0, 1] and airlight A in [0, 1] broadcast against it (per image).
    Returns (1 - t)·image + t·A·white, in [0, white]; t = 0 returns the image values unchanged.
    """
    return image * (1 - strength) + strength * airlight * white
