"""Random image distortions for training: TensorFlow-for-Poets' flags, and the views timm and torchvision train with.

Poets distorted every image afresh on every step, running the whole backbone
per step. Here each distorted view is drawn once and cached
(``cache/views.py``, ``--augment_copies``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import UserError, option_name
from ..options import default
from .decode import Box, load_rgb

# Aspect ratios (width / height) of a random-resized crop, drawn log-uniformly: torchvision's and timm's default.
CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
# Draws of a random-resized crop before falling back to a centre crop, as torchvision and timm do.
CROP_ATTEMPTS = 10
# ITU-R 601-2 luma, PIL's convert("L") and torchvision's rgb_to_grayscale: what contrast and saturation blend with.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# What --color_jitter adjusts, in the order its factors are drawn (torchvision's, without hue).
JITTERED = ("brightness", "contrast", "saturation")
# Options added after Poets': named in a view's identity only when on, so views cached before them keep their keys.
_LATER_FIELDS = ("random_resized_crop", "color_jitter")


@dataclass(frozen=True)
class Distortions:
    """Percentages as in Poets' flags, then fractions as in timm's; all zero/False means no distortion."""
    flip_left_right: bool = default("flip_left_right")
    random_crop: float = default("random_crop")
    random_scale: float = default("random_scale")
    random_brightness: float = default("random_brightness")
    random_resized_crop: float = default("random_resized_crop")  # smallest share of the area; 0: off
    color_jitter: float = default("color_jitter")  # brightness, contrast and saturation within 1 -/+ this

    def __post_init__(self) -> None:
        if not 0 <= self.random_resized_crop <= 1:
            raise UserError(f"{option_name('random_resized_crop')} must be a share of the image's area from 0 (off) "
                            f"to 1, got {self.random_resized_crop}")
        if self.random_resized_crop and (self.random_crop or self.random_scale):
            raise UserError(f"{option_name('random_resized_crop')} crops the image itself: give it without "
                            f"{option_name('random_crop')} and {option_name('random_scale')}")
        if self.color_jitter < 0:
            raise UserError(f"{option_name('color_jitter')} must be 0 (off) or more, got {self.color_jitter}")

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @property
    def identity(self) -> str:
        """What a cached view's key says of these distortions: Poets' four fields always, later ones when on."""
        named = [f.name for f in fields(self) if f.name not in _LATER_FIELDS or getattr(self, f.name)]
        return f"Distortions({', '.join(f'{name}={getattr(self, name)!r}' for name in named)})"


def distort_image(path: Path, size: int, distortions: Distortions, rng: np.random.Generator,
                  max_megapixels: float) -> np.ndarray:
    """Decode ``path`` and apply one random draw of ``distortions``; uint8 ``[size, size, 3]``.

    Crop and scale work as in Poets: the image is enlarged by the crop margin
    times a random scale, then a random ``size`` square is cut from it. A
    random-resized crop (``resized_crop_box``) replaces them when given.
    """
    min_area = distortions.random_resized_crop
    if min_area:
        image = load_rgb(path, size, size, max_megapixels, zoom=1 / math.sqrt(min_area),
                         crop=lambda width, height: resized_crop_box(width, height, min_area, rng))
    else:
        scale = (1 + distortions.random_crop / 100) * rng.uniform(1, 1 + distortions.random_scale / 100)
        enlarged = max(size, int(round(size * scale)))
        image = load_rgb(path, enlarged, enlarged, max_megapixels)
        top, left = rng.integers(0, enlarged - size + 1, size=2)
        image = image[top:top + size, left:left + size]
    if distortions.flip_left_right and rng.random() < 0.5:
        image = image[:, ::-1]
    if distortions.random_brightness:
        factor = rng.uniform(1 - distortions.random_brightness / 100, 1 + distortions.random_brightness / 100)
        image = np.clip(image.astype(np.float32) * factor, 0, 255)
    if distortions.color_jitter:
        image = color_jitter(image, distortions.color_jitter, rng)
    return np.ascontiguousarray(image, dtype=np.uint8)


def resized_crop_box(width: int, height: int, min_area: float, rng: np.random.Generator) -> Box:
    """A random-resized crop's region of a ``width`` x ``height`` image, as torchvision and timm draw it.

    Up to ``CROP_ATTEMPTS`` times: an area of a share of the image uniform in ``[min_area, 1]`` and an aspect
    ratio log-uniform in ``CROP_ASPECT_RANGE``; the first that fits is placed uniformly at random. If none fits,
    the centre crop of the whole image clamped to that aspect range.

    Args:
        width: the image's width in pixels.
        height: the image's height in pixels.
        min_area: the smallest share of the image's area, in (0, 1].
        rng: the view's random generator.

    Returns:
        (left, top, right, bottom) in whole pixels.
    """
    log_ratios = np.log(CROP_ASPECT_RANGE)
    for _ in range(CROP_ATTEMPTS):
        area = width * height * rng.uniform(min_area, 1)
        aspect = math.exp(rng.uniform(*log_ratios))
        crop_width, crop_height = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            left, top = int(rng.integers(0, width - crop_width + 1)), int(rng.integers(0, height - crop_height + 1))
            return left, top, left + crop_width, top + crop_height
    aspect = min(max(width / height, CROP_ASPECT_RANGE[0]), CROP_ASPECT_RANGE[1])
    crop_width, crop_height = min(width, round(height * aspect)), min(height, round(width / aspect))
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    return left, top, left + crop_width, top + crop_height


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation scaled by ``jitter_factors``, as torchvision's ColorJitter (no hue).

    Brightness blends with black, contrast with the image's mean luma, saturation with each pixel's own luma;
    each result is clipped to [0, 255].

    Args:
        image: ``[H, W, 3]`` pixels from 0 to 255.
        strength: S of ``--color_jitter``.
        rng: the view's random generator.

    Returns:
        float32 ``[H, W, 3]`` pixels from 0 to 255.
    """
    pixels = image.astype(np.float32)
    for adjustment, factor in jitter_factors(strength, rng):
        if adjustment == "brightness":
            grey = np.float32(0)
        elif adjustment == "contrast":
            grey = (pixels @ LUMA).mean()
        else:
            grey = (pixels @ LUMA)[..., None]
        pixels = np.clip(factor * pixels + (1 - factor) * grey, 0, 255)
    return pixels


def jitter_factors(strength: float, rng: np.random.Generator) -> list[tuple[str, np.float32]]:
    """One colour jitter's draw: a random order of the three adjustments, each factor uniform in [max(0, 1-S), 1+S].

    Args:
        strength: S of ``--color_jitter``.
        rng: the view's random generator.

    Returns:
        (``"brightness"``, ``"contrast"`` or ``"saturation"``, factor) in the order they apply.
    """
    order = rng.permutation(len(JITTERED))
    factors = rng.uniform(max(0.0, 1 - strength), 1 + strength, size=len(JITTERED)).astype(np.float32)
    return [(JITTERED[i], factors[i]) for i in order]
