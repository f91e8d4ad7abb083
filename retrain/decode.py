"""Decode any image a user may have into the RGB array a backbone expects.

One function serves training, labelling and relabelling, so preprocessing can
never differ between the images a model was trained on and the ones it labels.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

# Photos of 100+ megapixels are legitimate; PIL's bomb guard would refuse them.
Image.MAX_IMAGE_PIXELS = None


class UnreadableImage(Exception):
    """The file is not an image we can decode (empty, truncated, not an image)."""


def load_rgb(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """Read ``path`` as a ``[height, width, 3]`` uint8 RGB array.

    EXIF orientation is applied, any mode (CMYK, grayscale, palette, alpha,
    16-bit) is converted to RGB, animated images use their first frame, and
    the image is squashed to the network's size as TensorFlow-for-Poets did.
    JPEGs are decoded at a reduced scale first when they are much larger than
    needed, which makes huge photos cheap without visibly changing the result.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                image.draft("RGB", (width * 2, height * 2))
                image = ImageOps.exif_transpose(image)
                image = _to_rgb(image)
                image = image.resize((width, height), Image.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
    except Exception as error:  # on damaged files PIL also raises OverflowError, MemoryError, struct.error, ...
        raise UnreadableImage(f"{path}: {error or type(error).__name__}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale 16-bit range to 8 bits instead of clipping to white. "I;16" is always
        # 16-bit, even when dark; plain "I" may hold 8-bit values, so only a value above 255 proves 16 bits.
        array = np.asarray(image, dtype=np.float64)
        scale = 1.0 if image.mode == "I" and array.max() <= 255 else 255.0 / 65535.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: transparent areas are usually background.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")
