"""Compute each image's bottleneck vector once and keep it on disk.

Layout: ``<bottleneck_dir>/<architecture cache id>/shard-*.h5``. A shard holds
``keys`` (SHA-1 of the image file's bytes) and ``features`` (float16 where
that is exact enough), with a SHA-256 of both in its attributes. Vectors are
keyed by image *content*, so an edited image is recomputed and a renamed or
moved one is not; the directory is keyed by backbone, so vectors from two
backbones never mix.

Why shards: a shard is written under a temporary name and renamed into place
only when complete, and never modified after. A crash or SIGKILL loses at most
the shard being written; two processes write different shards and never
corrupt each other. Many small shards are merged under a file lock.
"""
from __future__ import annotations

import collections
import fcntl
import hashlib
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from .decode import UnreadableImage, load_rgb
from .paths import atomic_write

KEY_DTYPE = "S40"
FLUSH_EVERY_IMAGES = 512
FLUSH_EVERY_SECONDS = 30.0
MERGE_WHEN_SHARDS_EXCEED = 8
FLOAT16_MAX = 60000.0


def content_key(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes: the cache key of its bottleneck."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _checksum(keys: np.ndarray, features: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(keys).tobytes())
    digest.update(np.ascontiguousarray(features).tobytes())
    return digest.hexdigest()


@dataclass
class CacheLoad:
    """What reading the cache found: vectors by key, and shards it had to drop."""
    features: dict[str, np.ndarray] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)


class BottleneckCache:
    """The on-disk bottleneck vectors of one backbone."""

    def __init__(self, bottleneck_dir: str | os.PathLike, cache_id: str, feature_size: int):
        self.directory = Path(bottleneck_dir) / cache_id
        self.cache_id = cache_id
        self.feature_size = feature_size

    def shard_paths(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.h5")) if self.directory.is_dir() else []

    def load(self, wanted: set[str] | None = None, report: Callable[[str], None] = print) -> CacheLoad:
        """Read every intact shard; drop (and report) damaged or foreign ones."""
        result = CacheLoad()
        with self._lock(fcntl.LOCK_SH):
            for path in self.shard_paths():
                try:
                    keys, features = self._read_shard(path)
                except FileNotFoundError:
                    continue  # merged away by another process between listing and reading
                except (OSError, ValueError, KeyError) as error:
                    report(f"warning: bottleneck cache file {path.name} is damaged ({error}); its vectors will be "
                           f"recomputed")
                    result.damaged.append(path.name)
                    _unlink_quietly(path)
                    continue
                for key, vector in zip(keys, features):
                    key = key.decode("ascii")
                    if wanted is None or key in wanted:
                        result.features[key] = vector
        return result

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        with h5py.File(path, "r") as shard:
            if shard.attrs.get("cache_id") != self.cache_id or shard.attrs.get("feature_size") != self.feature_size:
                raise ValueError(f"made by backbone {shard.attrs.get('cache_id')!r}, not {self.cache_id!r}")
            keys, features = shard["keys"][...], shard["features"][...]
            if shard.attrs.get("checksum") != _checksum(keys, features):
                raise ValueError("checksum mismatch")
        if features.shape != (len(keys), self.feature_size):
            raise ValueError(f"features of shape {features.shape}")
        return keys, features

    def write_shard(self, keys: Sequence[str], features: np.ndarray) -> Path:
        """Store vectors as one new shard, atomically."""
        features = np.asarray(features, dtype=np.float32)
        if np.all(np.abs(features) < FLOAT16_MAX):
            features = features.astype(np.float16)
        key_array = np.array([key.encode("ascii") for key in keys], dtype=KEY_DTYPE)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"
        path = self.directory / name
        with atomic_write(path, "w+b") as handle, h5py.File(handle, "w") as shard:
            shard.create_dataset("keys", data=key_array)
            shard.create_dataset("features", data=features)
            shard.attrs.update(cache_id=self.cache_id, feature_size=self.feature_size,
                               checksum=_checksum(key_array, features))
        return path

    def merge_shards(self) -> bool:
        """Merge all shards into one if there are many; skip if another process holds the lock."""
        if len(self.shard_paths()) <= MERGE_WHEN_SHARDS_EXCEED:
            return False
        with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
            if not locked:
                return False
            shards = self.shard_paths()
            merged: dict[str, np.ndarray] = {}
            readable = []
            for path in shards:
                try:
                    keys, features = self._read_shard(path)
                except (OSError, ValueError, KeyError):
                    continue  # left for load() to report and drop
                readable.append(path)
                merged.update(zip((k.decode("ascii") for k in keys), features))
            if len(readable) < 2:
                return False
            self.write_shard(list(merged), np.stack(list(merged.values())))
            for path in readable:
                _unlink_quietly(path)
            return True

    class _Lock:
        def __init__(self, path: Path, mode: int):
            self.path, self.mode, self.handle = path, mode, None

        def __enter__(self) -> bool:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a")
            try:
                fcntl.flock(self.handle, self.mode)
                return True
            except BlockingIOError:
                return False

        def __exit__(self, *exc) -> None:
            self.handle.close()  # closing releases the lock

    def _lock(self, mode: int) -> "BottleneckCache._Lock":
        return BottleneckCache._Lock(self.directory / ".lock", mode)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


@dataclass
class Bottlenecks:
    """Features for the usable images, in input order, and what was skipped."""
    paths: list[Path]
    features: np.ndarray  # [len(paths), D]
    unreadable: list[tuple[Path, str]]
    reused: int
    computed: int


def decoded_batches(paths: Sequence[Path], height: int, width: int, batch_size: int, workers: int = 2,
                    prefetch_batches: int = 3) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
    """Decode images on worker threads, ahead of the consumer, in batches.

    Yields (indices of decoded images, uint8 batch, [(index, error)] for
    unreadable ones). PIL releases the GIL while decoding, so this overlaps
    with the backbone's compute; only ``prefetch_batches`` are held at once.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque[Future] = collections.deque()
        index_iter = iter(range(len(paths)))
        limit = batch_size * prefetch_batches

        def top_up() -> None:
            while len(pending) < limit:
                index = next(index_iter, None)
                if index is None:
                    return
                pending.append(pool.submit(_decode_or_error, index, paths[index], height, width))

        top_up()
        while pending:
            good, images, bad = [], [], []
            while pending and len(good) + len(bad) < batch_size:
                index, image, error = pending.popleft().result()
                top_up()
                if error is None:
                    good.append(index)
                    images.append(image)
                else:
                    bad.append((index, error))
            batch = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
            yield good, batch, bad


def _decode_or_error(index: int, path: Path, height: int, width: int) -> tuple[int, np.ndarray | None, str | None]:
    try:
        return index, load_rgb(path, height, width), None
    except UnreadableImage as error:
        return index, None, str(error)


def hash_files(paths: Sequence[Path], workers: int = 4) -> list[str | None]:
    """Content keys of ``paths``; None where the file can't be read."""
    def safe_key(path: Path) -> str | None:
        try:
            return content_key(path)
        except OSError:
            return None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(safe_key, paths))


def get_bottlenecks(paths: Sequence[Path], backbone: Callable[[np.ndarray], np.ndarray], input_size: int,
                    cache: BottleneckCache, batch_size: int = 32,
                    report: Callable[[str], None] = print) -> Bottlenecks:
    """Bottlenecks for ``paths``: from the cache where present, else computed and cached.

    Unusable images are skipped with one warning line each. New vectors are
    flushed to a shard every ``FLUSH_EVERY_IMAGES`` images or
    ``FLUSH_EVERY_SECONDS``, so an interrupted run loses only that much work.
    """
    paths = [Path(p) for p in paths]
    keys = hash_files(paths)
    unreadable: list[tuple[Path, str]] = [(p, "cannot read file") for p, k in zip(paths, keys) if k is None]
    wanted = {k for k in keys if k is not None}
    found = cache.load(wanted, report=report).features
    first_path_of: dict[str, Path] = {}
    for path, key in zip(paths, keys):
        if key is not None and key not in found:
            first_path_of.setdefault(key, path)
    reused = sum(1 for k in keys if k in found)
    report(f"Bottlenecks: {reused} of {len(paths)} images found in the cache ({cache.directory}), "
           f"{len(first_path_of)} to compute")

    failed_keys: dict[str, str] = {}
    if first_path_of:
        todo_keys, todo_paths = list(first_path_of), list(first_path_of.values())
        new_keys: list[str] = []
        new_features: list[np.ndarray] = []
        last_flush = time.monotonic()
        with tqdm(total=len(todo_paths), desc="Computing bottlenecks", unit="img") as bar:
            for good, batch, bad in decoded_batches(todo_paths, input_size, input_size, batch_size):
                for index, error in bad:
                    failed_keys[todo_keys[index]] = error
                    report(f"warning: skipping unreadable image {error}")
                if good:
                    vectors = backbone(batch)
                    new_keys.extend(todo_keys[i] for i in good)
                    new_features.extend(vectors)
                    found.update(zip((todo_keys[i] for i in good), vectors))
                bar.update(len(good) + len(bad))
                if new_keys and (len(new_keys) >= FLUSH_EVERY_IMAGES
                                 or time.monotonic() - last_flush > FLUSH_EVERY_SECONDS):
                    cache.write_shard(new_keys, np.stack(new_features))
                    new_keys, new_features, last_flush = [], [], time.monotonic()
        if new_keys:
            cache.write_shard(new_keys, np.stack(new_features))
        cache.merge_shards()

    usable = [(p, k) for p, k in zip(paths, keys) if k is not None and k in found]
    unreadable += [(p, failed_keys[k]) for p, k in zip(paths, keys) if k in failed_keys]
    features = (np.stack([found[k] for _, k in usable]).astype(np.float32) if usable
                else np.zeros((0, cache.feature_size), np.float32))
    return Bottlenecks([p for p, _ in usable], features, unreadable, reused, len(first_path_of) - len(failed_keys))
