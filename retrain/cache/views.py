"""Augmentation through the cache: each training image cached as K distorted views.

Poets distorted every image afresh on every step, which meant running the
whole backbone per step (about 100x slower than cached bottlenecks). Here a
view is drawn once, deterministically from the image content, the view index
and ``--random_seed``, and its features (pooled vectors, or activations at
the fine-tuning cut) are cached like any other row. View 0 is the image
itself, the row validation and test use; views 1..K are distorted with
Poets' flags (crop, scale, flip, brightness) or as timm and torchvision draw
them (random-resized crop, colour jitter).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.decode import load_rgb
from ..data.distortions import Distortions, distort_image
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from ..errors import Log, UserError, option_name
from ..files import hash_files
from ..options import DISTORTION_FLAG_COPIES
from .bottlenecks import DEFAULT_BATCH_SIZE, compute_and_store
from .rows import FeatureRows
from .store import DEFAULT_MEMORY_BUDGET_GB, KEY_DTYPE, BottleneckCache

# Distortions for --augment_copies when no distortion flag is given: mild, as Poets' README suggested.
DEFAULT_AUGMENT_DISTORTIONS = Distortions(flip_left_right=True, random_crop=10, random_scale=10,
                                          random_brightness=10)
# Views as timm trains with, for a preset: its colour jitter (0.4) and a random-resized crop that keeps at least a
# quarter of the image, between timm's 0.08 for training from scratch and the 0.35 tried on the flowers (see
# docs/fine-tuning.md): a fine-tuned backbone keeps its pretrained features, so a view must still show the object.
STRONG_VIEWS = Distortions(flip_left_right=True, random_resized_crop=0.25, color_jitter=0.4)


@dataclass(frozen=True)
class Augmentation:
    """``copies`` distorted views per training image, seeded by content, view index and ``seed``."""
    copies: int = 0
    distortions: Distortions = field(default_factory=Distortions)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise UserError(f"{option_name('augment_copies')} must be 0 or more, got {self.copies}")

    def view_key(self, content_key: str, view: int) -> str:
        """Cache key of one view: view 0 is the image's own key, so undistorted rows are shared."""
        if view == 0:
            return content_key
        identity = f"{content_key}|view {view}|seed {self.seed}|{self.distortions.identity}"
        return hashlib.sha1(identity.encode("utf-8")).hexdigest()

    def load(self, path: str | Path, size: int, content_key: str, view: int,
             max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS) -> np.ndarray:
        """The ``view`` of the image at ``path`` as uint8 ``[size, size, 3]``; the same bytes on every run."""
        if view == 0:
            return load_rgb(path, size, size, max_megapixels)
        seed = int.from_bytes(bytes.fromhex(self.view_key(content_key, view))[:8], "little")
        return distort_image(path, size, self.distortions, np.random.default_rng(seed), max_megapixels)


def augmentation_for(copies: int, distortions: Distortions, seed: int | None) -> Augmentation:
    """The run's augmentation: Poets' distortion flags alone mean views too; copies alone use mild defaults.

    Without ``--random_seed`` views are still seeded (by 0), so a second run reuses the cached views.
    """
    if copies == 0 and distortions.enabled:
        copies = DISTORTION_FLAG_COPIES
    if copies and not distortions.enabled:
        distortions = DEFAULT_AUGMENT_DISTORTIONS
    return Augmentation(copies, distortions if copies else Distortions(), seed or 0)


@dataclass
class Views:
    """Cached rows of the distorted views: ``features[i]`` is view ``view[i]`` of image ``image[i]``."""
    image: np.ndarray  # index into the paths given
    view: np.ndarray
    features: np.ndarray | FeatureRows
    computed: int


def get_views(paths: Sequence[Path], backbone: Callable[[np.ndarray], np.ndarray], input_size: int,
              cache: BottleneckCache, augmentation: Augmentation, batch_size: int = DEFAULT_BATCH_SIZE,
              max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS, log: Log = print,
              memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB) -> Views:
    """Views 1..K of each image: from the cache where present, else decoded, distorted, run and cached.

    Unreadable images are skipped silently: the undistorted pass (``get_bottlenecks``) already reported them.
    """
    content_keys = hash_files(paths)
    sources = [(i, view) for i, key in enumerate(content_keys) if key is not None
               for view in range(1, augmentation.copies + 1)]
    keys = [augmentation.view_key(content_keys[i], view) for i, view in sources]
    key_array = np.array([key.encode("ascii") for key in keys], dtype=KEY_DTYPE)
    loaded = cache.load(key_array, log=log)
    cached = loaded.find(key_array) >= 0
    missing = {keys[n]: (paths[i], content_keys[i], view) for n, (i, view) in enumerate(sources) if not cached[n]}
    log(f"Augmented views: {len(sources) - len(missing)} of {len(sources)} found in the cache, "
        f"{len(missing)} to compute")
    if missing:
        def load(source: tuple[Path, str, int], height: int, width: int, megapixels: float) -> np.ndarray:
            return augmentation.load(source[0], height, *source[1:], megapixels)
        compute_and_store(missing, backbone, input_size, cache, batch_size, max_megapixels, load,
                          "Computing augmented views")
        cache.merge_shards(log)
        loaded.close()
        loaded = cache.load(key_array, log=log)
    usable, features = loaded.read_features(key_array, memory_budget_gb)
    image = np.array([sources[n][0] for n in usable], np.int64)
    view = np.array([sources[n][1] for n in usable], np.int64)
    return Views(image, view, features, len(missing))


def with_views(rows: np.ndarray | FeatureRows, labels: np.ndarray, views: Views,
               ) -> tuple[np.ndarray | FeatureRows, np.ndarray]:
    """Training rows followed by their views' rows, and the labels of both."""
    labels = np.concatenate([labels, labels[views.image]])
    if isinstance(rows, FeatureRows) and isinstance(views.features, FeatureRows):
        return rows.joined(views.features), labels
    return np.concatenate([rows, np.asarray(views.features)]), labels
