"""Class weights for imbalanced training sets, and the warning that suggests them.

With 1000 photos of one class and 50 of another, an unweighted loss lets
the head ignore the small class at little cost. ``balanced`` weighs each
image by ``images / (classes * images of its class)``, scikit-learn's rule,
so every class contributes equally to the loss.
"""
from __future__ import annotations

import numpy as np

from ..errors import option_value

CLASS_WEIGHTS = ("none", "balanced")
IMBALANCE_WARNING_RATIO = 5  # largest class over smallest beyond which we suggest --class_weight balanced


def class_weights(class_weight: str, labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """Per-class loss weights for the training ``labels``, or None for the unweighted loss."""
    if class_weight == "none":
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return weights.astype(np.float32)


def imbalance_warning(labels: np.ndarray, names: list[str], class_weight: str) -> str | None:
    """A one-line warning when the largest class has over 5x the images of the smallest and nothing balances it."""
    counts = np.bincount(labels, minlength=len(names))
    smallest, largest = int(np.argmin(counts)), int(np.argmax(counts))
    if class_weight != "none" or counts[largest] <= IMBALANCE_WARNING_RATIO * counts[smallest]:
        return None
    return (f"Warning: classes are imbalanced ({names[largest]!r} has {counts[largest]} training images, "
            f"{names[smallest]!r} {counts[smallest]}); consider {option_value('class_weight', repr('balanced'))}")
