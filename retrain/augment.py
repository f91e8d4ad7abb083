"""Augmentation through the cache: each training image cached as K distorted views.

Poets distorted every image afresh on every step, which meant running the
whole backbone per step (about 100x slower than cached bottlenecks). Here a
view is drawn once, deterministically from the image content, the view index
and ``--random_seed``, and its features (pooled vectors, or activations at
the fine-tuning cut) are cached like any other row. View 0 is the image
itself, the row validation and test use; views 1..K are distorted with
Poets' flags (crop, scale, flip, brightness).
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from .bottlenecks import (DEFAULT_MEMORY_BUDGET_GB, FLUSH_EVERY_IMAGES, KEY_DTYPE, BottleneckCache, FeatureRows,
                          cached_features, hash_files)
from .decode import UnreadableImage, load_rgb
from .distortions import Distortions
from .errors import UserError

Log = Callable[[str], None]

# Distortions for --augment_copies when no distortion flag is given: mild, as Poets' README suggested.
DEFAULT_AUGMENT_DISTORTIONS = Distortions(flip_left_right=True, random_crop=10, random_scale=10,
                                          random_brightness=10)


@dataclass(frozen=True)
class Augmentation:
    """``copies`` distorted views per training image, seeded by content, view index and ``seed``."""
    copies: int = 0
    distortions: Distortions = field(default_factory=Distortions)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise UserError(f"--augment_copies must be 0 or more, got {self.copies}")

    def view_key(self, content_key: str, view: int) -> str:
        """Cache key of one view: view 0 is the image's own key, so undistorted rows are shared."""
        if view == 0:
            return content_key
        identity = f"{content_key}|view {view}|seed {self.seed}|{self.distortions}"
        return hashlib.sha1(identity.encode("utf-8")).hexdigest()

    def load(self, path: str | Path, size: int, content_key: str, view: int) -> np.ndarray:
        """The ``view`` of the image at ``path`` as uint8 ``[size, size, 3]``; the same bytes on every run."""
        if view == 0:
            return load_rgb(path, size, size)
        seed = int.from_bytes(bytes.fromhex(self.view_key(content_key, view))[:8], "little")
        return distort_image(path, size, self.distortions, np.random.default_rng(seed))


def augmentation_for(copies: int, distortions: Distortions, seed: int | None) -> Augmentation:
    """The run's augmentation: Poets' distortion flags alone mean views too; copies alone use mild defaults.

    Without ``--random_seed`` views are still seeded (by 0), so a second run reuses the cached views.
    """
    if copies and not distortions.enabled:
        distortions = DEFAULT_AUGMENT_DISTORTIONS
    return Augmentation(copies, distortions if copies else Distortions(), seed or 0)


def distort_image(path: str | Path, size: int, distortions: Distortions, rng: np.random.Generator) -> np.ndarray:
    """Decode ``path`` and apply one random draw of ``distortions``; uint8 ``[size, size, 3]``.

    Crop and scale work as in Poets: the image is enlarged by the crop margin
    times a random scale, then a random ``size`` square is cut from it.
    """
    scale = (1 + distortions.random_crop / 100) * rng.uniform(1, 1 + distortions.random_scale / 100)
    enlarged = max(size, int(round(size * scale)))
    image = load_rgb(path, enlarged, enlarged)
    top, left = rng.integers(0, enlarged - size + 1, size=2)
    image = image[top:top + size, left:left + size]
    if distortions.flip_left_right and rng.random() < 0.5:
        image = image[:, ::-1]
    if distortions.random_brightness:
        factor = rng.uniform(1 - distortions.random_brightness / 100, 1 + distortions.random_brightness / 100)
        image = np.clip(image.astype(np.float32) * factor, 0, 255)
    return np.ascontiguousarray(image, dtype=np.uint8)


@dataclass
class Views:
    """Cached rows of the distorted views: ``features[i]`` is view ``view[i]`` of image ``image[i]``."""
    image: np.ndarray  # index into the paths given
    view: np.ndarray
    features: np.ndarray | FeatureRows
    computed: int


def get_views(paths: Sequence[Path], backbone: Callable[[np.ndarray], np.ndarray], input_size: int,
              cache: BottleneckCache, augmentation: Augmentation, batch_size: int = 16, log: Log = print,
              memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB) -> Views:
    """Views 1..K of each image: from the cache where present, else decoded, distorted, run and cached.

    Unreadable images are skipped silently: the undistorted pass (``get_bottlenecks``) already reported them.
    """
    content_keys = hash_files(paths)
    sources = [(i, view) for i, key in enumerate(content_keys) if key is not None
               for view in range(1, augmentation.copies + 1)]
    keys = [augmentation.view_key(content_keys[i], view) for i, view in sources]
    key_array = np.array([key.encode("ascii") for key in keys], dtype=KEY_DTYPE)
    loaded = cache.load(key_array, report=log)
    missing = [n for n, hit in enumerate(loaded.find(key_array) >= 0) if not hit]
    log(f"Augmented views: {len(sources) - len(missing)} of {len(sources)} found in the cache, "
        f"{len(missing)} to compute")
    if missing:
        def load(n: int) -> np.ndarray | None:
            image, view = sources[n]
            try:
                return augmentation.load(paths[image], input_size, content_keys[image], view)
            except UnreadableImage:
                return None
        _compute_views(missing, keys, load, backbone, cache, batch_size)
        cache.merge_shards(log)
        loaded.close()
        loaded = cache.load(key_array, report=log)
    usable, features = cached_features(loaded, key_array, memory_budget_gb)
    image = np.array([sources[n][0] for n in usable], np.int64)
    view = np.array([sources[n][1] for n in usable], np.int64)
    return Views(image, view, features, len(missing))


def _compute_views(todo: list[int], keys: list[str], load: Callable[[int], np.ndarray | None],
                   backbone: Callable[[np.ndarray], np.ndarray], cache: BottleneckCache, batch_size: int) -> None:
    """Run the backbone on each view and write shards as it goes: a killed run keeps what it flushed."""
    new_keys: list[str] = []
    new_features: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=2) as decoder, \
            tqdm(total=len(todo), desc="Computing augmented views", unit="view") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            images = list(decoder.map(load, batch))
            good = [(n, image) for n, image in zip(batch, images) if image is not None]
            if good:
                new_keys.extend(keys[n] for n, _ in good)
                new_features.append(backbone(np.stack([image for _, image in good])))
            bar.update(len(batch))
            if len(new_keys) >= FLUSH_EVERY_IMAGES:
                cache.write_shard(new_keys, np.concatenate(new_features))
                new_keys, new_features = [], []
    if new_keys:
        cache.write_shard(new_keys, np.concatenate(new_features))
