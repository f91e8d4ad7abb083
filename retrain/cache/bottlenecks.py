"""The bottleneck stage: each image's features computed once, then always read from the cache.

Images are hashed, looked up in the ``BottleneckCache`` (``cache_store.py``),
and only the missing ones are decoded (ahead, on threads) and run through the
backbone; new vectors are flushed to shards as they come. Every vector is then
read back from the verified cache, so a first run and every later one train
on exactly the same numbers.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.decode import decoded_batches
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from ..errors import Log, UserError, option_name
from ..files import hash_files
from ..options import default
from ..progress import progress_bar
from .rows import FeatureRows
from .store import DEFAULT_MEMORY_BUDGET_GB, KEY_DTYPE, BottleneckCache

FLUSH_EVERY_IMAGES = 512
FLUSH_EVERY_SECONDS = 30.0
# Images per backbone call; 32 was slower for MobileNet on a 2-core CPU (benchmarks/README.md).
DEFAULT_BATCH_SIZE = default("bottleneck_batch_size")


def check_batch_size(batch_size: int) -> None:
    """``--bottleneck_batch_size`` must be a positive whole number."""
    if batch_size < 1:
        raise UserError(f"{option_name('bottleneck_batch_size')} must be at least 1, got {batch_size}")


@dataclass
class Bottlenecks:
    """Features of the usable images, and what was skipped.

    ``usable`` holds the positions, in the list of paths asked for, of the
    images that have a vector, in ascending order; ``features`` row ``i``
    belongs to ``usable[i]``. It is one in-memory matrix in the cache's
    precision (float16) when it fits the memory budget, else ``FeatureRows``
    streamed from disk.
    """
    usable: np.ndarray
    features: np.ndarray | FeatureRows  # [len(usable), D]
    unreadable: list[tuple[Path, str]]
    reused: int
    computed: int

    def rows_for(self, start: int, stop: int) -> np.ndarray | FeatureRows:
        """Features of the usable images among paths ``start:stop``: a view (or still on disk), never a copy."""
        first, last = np.searchsorted(self.usable, [start, stop])
        if isinstance(self.features, FeatureRows):
            return self.features.subset(np.arange(first, last))
        return self.features[first:last]


def get_bottlenecks(paths: Sequence[Path], backbone: Callable[[np.ndarray], np.ndarray], input_size: int,
                    cache: BottleneckCache, batch_size: int = DEFAULT_BATCH_SIZE, log: Log = print,
                    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
                    max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS) -> Bottlenecks:
    """Bottlenecks for ``paths``: from the cache where present, else computed and cached.

    Unusable images are skipped with one warning line each. New vectors are
    flushed to a shard every ``FLUSH_EVERY_IMAGES`` images or
    ``FLUSH_EVERY_SECONDS``, so an interrupted run loses only that much work.
    Every vector is then read back from the verified cache, so the features
    are the same on the first run and on every later one.
    """
    paths = [Path(p) for p in paths]
    keys = hash_files(paths)
    key_array = np.array([(key or "").encode("ascii") for key in keys], dtype=KEY_DTYPE)
    wanted = key_array[key_array != b""]
    unreadable: list[tuple[Path, str]] = [(p, f"{p}: cannot read file") for p, k in zip(paths, keys) if k is None]
    loaded = cache.load(wanted, log=log)
    cached = loaded.find(key_array) >= 0
    first_path_of: dict[str, Path] = {}
    for path, key, hit in zip(paths, keys, cached):
        if key is not None and not hit:
            first_path_of.setdefault(key, path)
    reused = int(cached.sum())
    log(f"Bottlenecks: {reused} of {len(paths)} images found in the cache ({cache.directory}), "
        f"{len(first_path_of)} to compute")

    failed_keys: dict[str, str] = {}
    if first_path_of:
        failed_keys = compute_and_store(first_path_of, backbone, input_size, cache, batch_size, max_megapixels)
        cache.merge_shards(log)
        loaded.close()
        loaded = cache.load(wanted, log=log)
    usable, features = loaded.read_features(key_array, memory_budget_gb)
    unreadable += [(p, failed_keys[k]) for p, k in zip(paths, keys) if k in failed_keys]
    for path, error in unreadable:  # one line per file, also for copies of a bad file (decoded once, by key)
        same = "" if error.startswith(f"{path}:") else f"{path}: same bytes as "
        log(f"warning: skipping unreadable image {same}{error}")
    return Bottlenecks(usable, features, unreadable, reused, len(first_path_of) - len(failed_keys))


def compute_and_store(first_path_of: dict[str, object], backbone: Callable[[np.ndarray], np.ndarray],
                      input_size: int, cache: BottleneckCache, batch_size: int, max_megapixels: float,
                      load: Callable | None = None, desc: str = "Computing bottlenecks") -> dict[str, str]:
    """Run the backbone on each key's image and write the vectors to new shards; returns {key: error}.

    Decoding runs ahead on worker threads and shards are written on another,
    so the backbone never waits for either. ``load(item, height, width)``
    decodes an item of ``first_path_of`` (a path, or an augmented view).
    """
    todo_keys, todo_paths = list(first_path_of), list(first_path_of.values())
    failed_keys: dict[str, str] = {}
    new_keys: list[str] = []
    new_features: list[np.ndarray] = []
    last_flush = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as writer, \
            progress_bar(total=len(todo_paths), desc=desc, unit="img") as bar:
        writes: list[Future] = []
        for good, batch, bad in decoded_batches(todo_paths, input_size, input_size, batch_size,
                                                  max_megapixels=max_megapixels, load=load):
            for index, error in bad:
                failed_keys[todo_keys[index]] = error
            if good:
                new_keys.extend(todo_keys[i] for i in good)
                new_features.append(backbone(batch))
            bar.update(len(good) + len(bad))
            if new_keys and (len(new_keys) >= FLUSH_EVERY_IMAGES
                             or time.monotonic() - last_flush > FLUSH_EVERY_SECONDS):
                writes.append(writer.submit(cache.write_shard, new_keys, np.concatenate(new_features)))
                new_keys, new_features, last_flush = [], [], time.monotonic()
        if new_keys:
            writes.append(writer.submit(cache.write_shard, new_keys, np.concatenate(new_features)))
        for write in writes:
            write.result()  # a failed write raises here, after the others are safely on disk
    return failed_keys
