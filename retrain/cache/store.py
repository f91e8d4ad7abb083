"""The on-disk bottleneck store: checksummed HDF5 shards, indexed, streamed.

Layout: ``<bottleneck_dir>/<architecture cache id>/shard-*.h5``. A shard holds
``keys`` (SHA-1 of the image file's bytes) and ``features`` (float16 where
that is exact enough), with a SHA-256 of the whole file in its first bytes,
checked before HDF5 parses anything (HDF5 can misread or hang on damaged
metadata). Vectors are keyed by image *content*, so an edited image is
recomputed and a renamed or moved one is not; the directory is keyed by
backbone, so vectors from two backbones never mix. Any writer (retrain, a
second process, a worker on another machine) writes this same format.

Why shards: a shard is written under a temporary name and renamed into place
only when complete, and never modified after. A crash or SIGKILL loses at most
the shard being written; two processes write different shards and never
corrupt each other. Many small shards are merged under a file lock.

Why an index: reading the cache lists each shard's keys (about 50 bytes a
vector) and reads vectors in large sequential slabs only when asked, so a
million cached vectors never become a million Python objects. They come back
as one float16 matrix when they fit ``--memory_budget_gb``, else as
``FeatureRows`` that training streams from disk.

What fills the store is ``bottlenecks.py``; this module only keeps it.
"""
from __future__ import annotations

import fcntl
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from ..errors import Log
from ..files import atomic_write, digest_rest, free_bytes, megabytes, remove_quietly
from ..freed_memory import return_freed_memory
from ..options import default
from .rows import FeatureRows, rows_per_read, within_budget

KEY_DTYPE = "S40"
MERGE_WHEN_SHARDS_EXCEED = 8
FLOAT16_MAX = 60000.0
FLOAT16_BYTES = 2  # per stored value: what a run's cache takes on disk
DEFAULT_MEMORY_BUDGET_GB = default("memory_budget_gb")
# A shard's first bytes (an HDF5 user block, which HDF5 skips) hold the SHA-256 of the rest of the file.
SHARD_HEADER_BYTES = 512
SHARD_MAGIC = b"retrain shard sha256 "


@dataclass
class CacheLoad:
    """What reading the cache found: where each intact vector is, and the shards it had to drop.

    An index, not the vectors: sorted keys with their shard and row (about 50
    bytes a vector, no Python object per vector), so finding a million keys is
    a few array operations and the vectors are read only when wanted.
    """
    keys: np.ndarray | None  # sorted, unique, KEY_DTYPE; None once released by ``read_features``
    shard: np.ndarray | None  # index into ``datasets``
    row: np.ndarray | None
    datasets: list[h5py.Dataset]  # each shard's open ``features``
    paths: list[Path]
    feature_size: int

    def __len__(self) -> int:
        return len(self._index_keys())

    def _index_keys(self) -> np.ndarray:
        if self.keys is None:
            raise RuntimeError("this CacheLoad's index was released by read_features; load the cache again")
        return self.keys

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Position of each key in this index; -1 where it is not cached."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        self._index_keys()
        if not len(self.keys):
            return np.full(len(keys), -1, np.int64)
        where = np.searchsorted(self.keys, keys)
        hit = self.keys[np.minimum(where, len(self.keys) - 1)] == keys
        return np.where(hit, where, -1)

    def rows(self, positions: np.ndarray) -> FeatureRows:
        return FeatureRows(self.datasets, self.shard[positions], self.row[positions], self.feature_size)

    def read_features(self, keys: np.ndarray,
                      memory_budget_gb: float) -> tuple[np.ndarray, np.ndarray | FeatureRows]:
        """The last use of a load: which of ``keys`` are cached (their indices, ascending) and their vectors.

        The vectors come as one in-memory matrix if they fit
        ``memory_budget_gb`` (the shards are then closed), else as
        ``FeatureRows`` streamed from the still-open shards. The key index is
        released first, so its ~50 bytes a vector are not held while the
        vectors are read; ``find`` refuses afterwards instead of finding nothing.
        """
        positions = self.find(keys)
        usable = np.flatnonzero(positions >= 0)
        rows = self.rows(positions[usable])
        self.keys = self.shard = self.row = None
        return_freed_memory()  # ~100 MB of index scratch per million vectors, not kept under the matrix
        features = within_budget(rows, memory_budget_gb)
        if not isinstance(features, FeatureRows):
            self.close()
        return usable, features

    def close(self) -> None:
        for dataset in self.datasets:
            dataset.file.close()


class BottleneckCache:
    """The on-disk bottleneck vectors of one backbone."""

    def __init__(self, bottleneck_dir: str | os.PathLike, cache_id: str, feature_size: int):
        self.directory = Path(bottleneck_dir) / cache_id
        self.cache_id = cache_id
        self.feature_size = feature_size
        # Shards this object wrote or already checked, by (inode, size, mtime): shards are never modified,
        # so a cold run need not re-read the shards it has just written (or merged) to verify them again.
        self._verified: dict[Path, tuple[int, int, int]] = {}

    def shard_paths(self) -> list[Path]:
        return sorted(self.directory.glob("shard-*.h5")) if self.directory.is_dir() else []

    def load(self, wanted: np.ndarray | None = None, log: Log = print) -> CacheLoad:
        """Index every intact shard holding a ``wanted`` key (default: all); drop and report damaged ones.

        Checksums are verified in large sequential reads, so memory stays flat
        however big the cache is.
        """
        with self._lock(fcntl.LOCK_SH):
            return self._index(wanted, log)

    def _index(self, wanted: np.ndarray | None, log: Log) -> CacheLoad:
        keys, shards, datasets, paths = [], [], [], []
        for path in self.shard_paths():
            try:
                shard, shard_keys = self._open_shard(path)
            except FileNotFoundError:
                continue  # merged away by another process between listing and reading
            except (OSError, ValueError, KeyError) as error:
                self._drop(path, error, log)
                continue
            if wanted is not None and not np.isin(shard_keys, wanted).any():
                shard.close()
                continue
            keys.append(shard_keys)
            shards.append(np.full(len(shard_keys), len(datasets), np.int32))
            datasets.append(shard["features"])
            paths.append(path)
        all_keys = np.concatenate(keys) if keys else np.zeros(0, KEY_DTYPE)
        unique, first = np.unique(all_keys, return_index=True)
        rows = np.concatenate([np.arange(len(k), dtype=np.int32) for k in keys]) if keys else np.zeros(0, np.int32)
        shard_of = np.concatenate(shards) if shards else np.zeros(0, np.int32)
        return CacheLoad(unique, shard_of[first], rows[first], datasets, paths, self.feature_size)

    def _open_shard(self, path: Path) -> tuple[h5py.File, np.ndarray]:
        identity = _identity(path)  # taken before checking: a file changed meanwhile is checked again next time
        if self._verified.get(path) != identity:
            _check_file_digest(path)
            self._verified[path] = identity
        shard = h5py.File(path, "r")
        try:
            if shard.attrs.get("cache_id") != self.cache_id or shard.attrs.get("feature_size") != self.feature_size:
                raise ValueError(f"made by backbone {shard.attrs.get('cache_id')!r}, not {self.cache_id!r}")
            keys = shard["keys"][...]
            if shard["features"].shape != (len(keys), self.feature_size):
                raise ValueError(f"features of shape {shard['features'].shape}")
        except BaseException:
            shard.close()
            raise
        return shard, keys

    @staticmethod
    def _drop(path: Path, error: Exception, log: Log) -> None:
        log(f"warning: bottleneck cache file {path.name} is damaged ({error}); its vectors will be recomputed")
        remove_quietly(path)

    def write_shard(self, keys: Sequence[str], features: np.ndarray) -> Path:
        """Store vectors as one new shard, atomically."""
        features = np.asarray(features, dtype=np.float32)
        if np.all(np.abs(features) < FLOAT16_MAX):
            features = features.astype(np.float16)
        key_array = np.array([key.encode("ascii") for key in keys], dtype=KEY_DTYPE)
        return self._write_shard(key_array, features.dtype, [features])

    def _write_shard(self, keys: np.ndarray, dtype: np.dtype, blocks: Iterable[np.ndarray]) -> Path:
        """Write ``keys`` and their vectors, given block by block so a shard never has to fit in memory."""
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.h5"
        path = self.directory / name
        with atomic_write(path, "w+b") as handle:
            with h5py.File(handle, "w", userblock_size=SHARD_HEADER_BYTES) as shard:
                shard.create_dataset("keys", data=keys)
                features = shard.create_dataset("features", (len(keys), self.feature_size), dtype)
                start = 0
                for block in blocks:
                    block = np.ascontiguousarray(block, dtype)
                    features[start:start + len(block)] = block
                    start += len(block)
                shard.attrs.update(cache_id=self.cache_id, feature_size=self.feature_size)
            header = SHARD_MAGIC + _file_digest(handle).encode("ascii")
            handle.seek(0)
            handle.write(header)
        self._verified[path] = _identity(path)
        return path

    def merge_shards(self, log: Log = print, always: bool = False) -> bool:
        """Merge all shards into one if there are many (``always``: 2 or more); skip if another process has the lock.

        The merge streams shard by shard, so it needs little memory even for
        millions of vectors, and keeps one row per key: vectors written twice
        (by a retried Beam bundle) are stored once again.
        """
        if len(self.shard_paths()) <= (1 if always else MERGE_WHEN_SHARDS_EXCEED):
            return False
        with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
            if not locked:
                return False
            index = self._index(None, log)
            try:
                if len(index.paths) < 2 or not self._room_to_merge(index.paths, log):
                    return False
                rows = index.rows(np.arange(len(index)))
                chunks = rows.chunks(rows_per_read(index.datasets[0]))
                order = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
                self._write_shard(index.keys[order], rows.dtype, (rows.read(chunk) for chunk in chunks))
            finally:
                index.close()
            for path in index.paths:
                remove_quietly(path)
            return True

    def _room_to_merge(self, paths: list[Path], log: Log) -> bool:
        """Whether the disk holds a merged copy of ``paths`` beside them; if not, say so (merging is optional)."""
        size, free = sum(path.stat().st_size for path in paths), free_bytes(self.directory)
        if size <= free:
            return True
        log(f"warning: not merging {len(paths)} cache shards: the merged copy needs {megabytes(size)} and the disk "
            f"has {megabytes(free)} free; the cache works unmerged, only a little slower to open")
        return False

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


def _identity(path: Path) -> tuple[int, int, int]:
    """What changes if a file is replaced or rewritten: inode, size, modification time."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _file_digest(handle) -> str:
    """SHA-256 of an open shard's bytes after its header."""
    handle.seek(SHARD_HEADER_BYTES)
    return digest_rest(handle, "sha256")


def _check_file_digest(path: Path) -> None:
    """Check a shard's whole-file checksum before HDF5 parses it.

    A flipped bit in HDF5's own metadata can make the library raise odd
    errors, misread the data type, or loop forever; checking the raw bytes
    first turns every kind of damage into one ``ValueError``.
    """
    with open(path, "rb") as handle:
        header = handle.read(SHARD_HEADER_BYTES)
        if not header.startswith(SHARD_MAGIC):
            raise ValueError("no file checksum: truncated, or written by an older version")
        if header[len(SHARD_MAGIC):len(SHARD_MAGIC) + 64] != _file_digest(handle).encode("ascii"):
            raise ValueError("file checksum mismatch")


def rounding_error(stored: np.ndarray) -> np.ndarray:
    """The most each stored vector value can differ from the float32 value the backbone gave.

    float16 keeps 11 significant bits: a normal value is within 2^-11 of its size (a hair more of the
    rounded size), a subnormal one within 2^-25. float32 vectors (``write_shard`` keeps any value float16
    cannot hold) are exact.
    """
    if stored.dtype != np.float16:
        return np.zeros(stored.shape, np.float32)
    return np.abs(stored.astype(np.float32)) * (2.0 ** -11 * (1 + 2.0 ** -10)) + 2.0 ** -25
