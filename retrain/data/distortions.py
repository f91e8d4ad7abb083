"""Random image distortions for training, with TensorFlow-for-Poets' flags.

Poets distorted every image afresh on every step, running the whole backbone
per step. Here each distorted view is drawn once and cached
(``augment.py``, ``--augment_copies``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..options import default
from .decode import load_rgb


@dataclass(frozen=True)
class Distortions:
    """Percentages as in Poets' flags; all zero/False means no distortion."""
    flip_left_right: bool = default("flip_left_right")
    random_crop: float = default("random_crop")
    random_scale: float = default("random_scale")
    random_brightness: float = default("random_brightness")

    @property
    def enabled(self) -> bool:
        return self.flip_left_right or any(v != 0 for v in (self.random_crop, self.random_scale,
                                                            self.random_brightness))


def distort_image(path: Path, size: int, distortions: Distortions, rng: np.random.Generator,
                  max_megapixels: float) -> np.ndarray:
    """Decode ``path`` and apply one random draw of ``distortions``; uint8 ``[size, size, 3]``.

    Crop and scale work as in Poets: the image is enlarged by the crop margin
    times a random scale, then a random ``size`` square is cut from it.
    """
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
    return np.ascontiguousarray(image, dtype=np.uint8)
