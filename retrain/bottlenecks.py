"""Compute each image's bottleneck vector once and keep it on disk.

Layout: ``<bottleneck_dir>/<architecture cache id>/shard-*.h5``. A shard holds
``keys`` (SHA-1 of the image file's bytes) and ``features`` (float16 where
that is exact enough), with a SHA-256 of the whole file in its first bytes,
checked before HDF5 parses anything (HDF5 can misread or hang on damaged
metadata). Vectors are keyed by image
*content*, so an edited image is recomputed and a renamed or moved one is
not; the directory is keyed by backbone, so vectors from two backbones never
mix.

Why shards: a shard is written under a temporary name and renamed into place
only when complete, and never modified after. A crash or SIGKILL loses at most
the shard being written; two processes write different shards and never
corrupt each other. Many small shards are merged under a file lock.

Why an index: reading the cache lists each shard's keys (about 50 bytes a
vector) and reads vectors in large sequential slabs only when asked, so a
million cached vectors never become a million Python objects. They come back
as one float16 matrix when they fit ``--memory_budget_gb``, else as
``FeatureRows`` that training streams from disk.
"""
from __future__ import annotations

import collections
import ctypes
import fcntl
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from .decode import UnreadableImage, load_rgb
from .paths import atomic_write, digest_rest, file_digest, remove_quietly

KEY_DTYPE = "S40"
FLUSH_EVERY_IMAGES = 512
FLUSH_EVERY_SECONDS = 30.0
MERGE_WHEN_SHARDS_EXCEED = 8
FLOAT16_MAX = 60000.0
READ_CHUNK_BYTES = 64 << 20  # one read from a shard: large and sequential, yet small next to any memory budget
SPARSE_READ_FRACTION = 16  # wanted rows fill less than 1/16 of a slab: fetch just those rows instead
DEFAULT_MEMORY_BUDGET_GB = 4.0
# A shard's first bytes (an HDF5 user block, which HDF5 skips) hold the SHA-256 of the rest of the file.
SHARD_HEADER_BYTES = 512
SHARD_MAGIC = b"retrain shard sha256 "


def content_key(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes: the cache key of its bottleneck."""
    return file_digest(path, "sha1")


def _rows_per_read(dataset: h5py.Dataset) -> int:
    return max(1, READ_CHUNK_BYTES // max(1, dataset.shape[1] * dataset.dtype.itemsize))


def _consecutive(values: np.ndarray) -> bool:
    """Whether ``values`` count up by one: n, n+1, n+2, ... (no repeats, no gaps, in order)."""
    return bool(np.all(np.diff(values) == 1))


def _aligned_empty(shape: tuple[int, int], dtype: np.dtype, alignment: int = 64) -> np.ndarray:
    """An empty array whose data starts on an ``alignment`` boundary.

    TensorFlow can then use the very same memory for a tensor (see
    ``head._as_tensor``) instead of copying a feature matrix that may be GiBs.
    """
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = np.empty(size + alignment, np.uint8)
    offset = -buffer.ctypes.data % alignment
    return buffer[offset:offset + size].view(dtype).reshape(shape)


class FeatureRows:
    """Chosen rows of the cache's shards, in a chosen order, read from disk on demand.

    This is how training uses more vectors than fit in memory: ``read`` fetches
    any selection with large sequential reads, ``chunks`` groups rows in disk
    order so a pass over them reads each byte once. The shard files stay open,
    so another process merging shards cannot pull them away mid-run.
    """

    def __init__(self, datasets: list[h5py.Dataset], shard: np.ndarray, row: np.ndarray, feature_size: int):
        self.datasets, self.shard, self.row = datasets, shard, row
        self.dtype = np.result_type(*(d.dtype for d in datasets)) if datasets else np.dtype(np.float16)
        self.shape = (len(row), feature_size)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def subset(self, positions: np.ndarray) -> FeatureRows:
        """The rows at ``positions``, still on disk."""
        return FeatureRows(self.datasets, self.shard[positions], self.row[positions], self.shape[1])

    def __getitem__(self, positions: np.ndarray | slice) -> np.ndarray:
        """Indexing reads, as for an array, so callers can take rows of either."""
        return self.read(np.arange(len(self))[positions])

    def read(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The vectors at ``positions`` (default: all) as one in-memory array."""
        if positions is None:
            shard, row = self.shard, self.row
        else:
            positions = np.asarray(positions, dtype=np.int64)
            shard, row = self.shard[positions], self.row[positions]
        out = _aligned_empty((len(row), self.shape[1]), self.dtype)
        for number in np.unique(shard):
            where = np.flatnonzero(shard == number)
            order = np.argsort(row[where], kind="stable")
            where, rows = where[order], row[where][order]
            dataset, span = self.datasets[number], _rows_per_read(self.datasets[number])
            start = 0
            while start < len(rows):
                stop = int(np.searchsorted(rows, rows[start] + span))
                window = rows[start:stop]
                first, last = int(window[0]), int(window[-1])
                target = where[start:stop]
                if dataset.dtype == out.dtype and _consecutive(window) and _consecutive(target):
                    # Consecutive rows to consecutive rows (a merged cache read whole): straight into ``out``,
                    # with no slab-sized copies in between.
                    dataset.read_direct(out, np.s_[first:last + 1], np.s_[target[0]:target[-1] + 1])
                elif len(window) * SPARSE_READ_FRACTION < last - first + 1:
                    unique, inverse = np.unique(window, return_inverse=True)
                    out[target] = dataset[unique][inverse]
                else:
                    out[target] = dataset[first:last + 1][window - first]
                start = stop
        return out

    def chunks(self, rows_per_chunk: int) -> list[np.ndarray]:
        """All positions in disk order, in groups of ``rows_per_chunk``: one sequential read each."""
        order = np.lexsort((self.row, self.shard))
        return [order[i:i + rows_per_chunk] for i in range(0, len(order), max(1, rows_per_chunk))]


@dataclass
class CacheLoad:
    """What reading the cache found: where each intact vector is, and the shards it had to drop.

    An index, not the vectors: sorted keys with their shard and row (about 50
    bytes a vector, no Python object per vector), so finding a million keys is
    a few array operations and the vectors are read only when wanted.
    """
    keys: np.ndarray  # sorted, unique, KEY_DTYPE
    shard: np.ndarray  # index into ``datasets``
    row: np.ndarray
    datasets: list[h5py.Dataset]  # each shard's open ``features``
    paths: list[Path]
    feature_size: int
    damaged: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Position of each key in this index; -1 where it is not cached."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        if not len(self.keys):
            return np.full(len(keys), -1, np.int64)
        where = np.searchsorted(self.keys, keys)
        hit = self.keys[np.minimum(where, len(self.keys) - 1)] == keys
        return np.where(hit, where, -1)

    def rows(self, positions: np.ndarray) -> FeatureRows:
        return FeatureRows(self.datasets, self.shard[positions], self.row[positions], self.feature_size)

    def take_rows(self, keys: np.ndarray) -> tuple[np.ndarray, FeatureRows]:
        """The last lookup: which of ``keys`` are cached (their indices) and where their vectors are.

        The key index is released afterwards (``find`` then finds nothing), so
        its ~50 bytes a vector are not held while the vectors are read.
        """
        positions = self.find(keys)
        usable = np.flatnonzero(positions >= 0)
        rows = self.rows(positions[usable])
        self.keys, self.shard, self.row = self.keys[:0], self.shard[:0], self.row[:0]
        _return_freed_memory()
        return usable, rows

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

    def load(self, wanted: np.ndarray | None = None, report: Callable[[str], None] = print) -> CacheLoad:
        """Index every intact shard holding a ``wanted`` key (default: all); drop and report damaged ones.

        Checksums are verified in large sequential reads, so memory stays flat
        however big the cache is.
        """
        with self._lock(fcntl.LOCK_SH):
            return self._index(wanted, report)

    def _index(self, wanted: np.ndarray | None, report: Callable[[str], None]) -> CacheLoad:
        keys, shards, datasets, paths, damaged = [], [], [], [], []
        for path in self.shard_paths():
            try:
                shard, shard_keys = self._open_shard(path)
            except FileNotFoundError:
                continue  # merged away by another process between listing and reading
            except (OSError, ValueError, KeyError) as error:
                self._drop(path, error, report, damaged)
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
        return CacheLoad(unique, shard_of[first], rows[first], datasets, paths, self.feature_size, damaged)

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
    def _drop(path: Path, error: Exception, report: Callable[[str], None], damaged: list[str]) -> None:
        report(f"warning: bottleneck cache file {path.name} is damaged ({error}); its vectors will be recomputed")
        damaged.append(path.name)
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

    def merge_shards(self, report: Callable[[str], None] = print) -> bool:
        """Merge all shards into one if there are many; skip if another process holds the lock.

        The merge streams shard by shard, so it needs little memory even for
        millions of vectors.
        """
        if len(self.shard_paths()) <= MERGE_WHEN_SHARDS_EXCEED:
            return False
        with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB) as locked:
            if not locked:
                return False
            index = self._index(None, report)
            try:
                if len(index.paths) < 2:
                    return False
                rows = index.rows(np.arange(len(index)))
                chunks = rows.chunks(_rows_per_read(index.datasets[0]))
                order = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
                self._write_shard(index.keys[order], rows.dtype, (rows.read(chunk) for chunk in chunks))
            finally:
                index.close()
            for path in index.paths:
                remove_quietly(path)
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


def _return_freed_memory() -> None:
    """Hand memory freed by the index and its scratch arrays back to the system (glibc only).

    Building the index frees many arrays of a few MB, which glibc keeps for
    reuse: about 100 MB per million vectors that would otherwise sit under
    the feature matrix read next and raise the peak.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


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


@dataclass
class Bottlenecks:
    """Features for the usable images, in input order, and what was skipped.

    ``features`` is one in-memory matrix in the cache's precision (float16)
    when it fits the memory budget, else ``FeatureRows`` streamed from disk.
    """
    paths: list[Path]
    features: np.ndarray | FeatureRows  # [len(paths), D]
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
    with ThreadPoolExecutor(max_workers=workers, initializer=_yield_cpu_to_the_backbone) as pool:
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


def _yield_cpu_to_the_backbone() -> None:
    """Lower the calling (decoding) thread's priority as far as it goes (nice 19).

    The backbone splits each layer across every core and waits for the slowest
    part, so a decoder that preempts one of its threads stalls the whole layer.
    At the lowest priority decoding mostly fills the cycles the backbone leaves
    idle; when it falls behind, the backbone waits and the cores are its. On 2
    cores this gave 5% more images per second than normal priority (nice 10
    gave nothing). It stays an ordinary thread, not SCHED_IDLE, so other busy
    programs slow decoding down but cannot stop it. Linux only: elsewhere the
    priority is per process.
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass  # refused by some sandboxes: decoding keeps its normal priority


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
                    cache: BottleneckCache, batch_size: int = 32, report: Callable[[str], None] = print,
                    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB) -> Bottlenecks:
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
    loaded = cache.load(wanted, report=report)
    cached = loaded.find(key_array) >= 0
    first_path_of: dict[str, Path] = {}
    for path, key, hit in zip(paths, keys, cached):
        if key is not None and not hit:
            first_path_of.setdefault(key, path)
    reused = int(cached.sum())
    report(f"Bottlenecks: {reused} of {len(paths)} images found in the cache ({cache.directory}), "
           f"{len(first_path_of)} to compute")

    failed_keys: dict[str, str] = {}
    if first_path_of:
        failed_keys = _compute_and_store(first_path_of, backbone, input_size, cache, batch_size, report)
        cache.merge_shards(report)
        loaded.close()
        loaded = cache.load(wanted, report=report)
    usable, features = cached_features(loaded, key_array, memory_budget_gb)
    unreadable += [(p, failed_keys[k]) for p, k in zip(paths, keys) if k in failed_keys]
    for path, error in unreadable:  # one line per file, also for copies of a bad file (decoded once, by key)
        same = "" if error.startswith(f"{path}:") else f"{path}: same bytes as "
        report(f"warning: skipping unreadable image {same}{error}")
    return Bottlenecks([paths[i] for i in usable], features, unreadable, reused, len(first_path_of) - len(failed_keys))


def within_budget(rows: FeatureRows, memory_budget_gb: float) -> np.ndarray | FeatureRows:
    """``rows`` read into memory if they fit ``memory_budget_gb``, else left on disk to be streamed."""
    return rows.read() if rows.nbytes <= memory_budget_gb * 2 ** 30 else rows


def cached_features(loaded: CacheLoad, keys: np.ndarray,
                    memory_budget_gb: float) -> tuple[np.ndarray, np.ndarray | FeatureRows]:
    """Which of ``keys`` are cached (their indices), and their vectors: in memory, or streamed beyond the budget.

    Read into memory, the shards are closed at once: nothing more is read from them.
    """
    usable, rows = loaded.take_rows(keys)
    features = within_budget(rows, memory_budget_gb)
    if not isinstance(features, FeatureRows):
        loaded.close()
    return usable, features


def _compute_and_store(first_path_of: dict[str, Path], backbone: Callable[[np.ndarray], np.ndarray],
                       input_size: int, cache: BottleneckCache, batch_size: int,
                       report: Callable[[str], None]) -> dict[str, str]:
    """Run the backbone on each key's image and write the vectors to new shards; returns {key: error}.

    Decoding runs ahead on worker threads and shards are written on another,
    so the backbone never waits for either.
    """
    todo_keys, todo_paths = list(first_path_of), list(first_path_of.values())
    failed_keys: dict[str, str] = {}
    new_keys: list[str] = []
    new_features: list[np.ndarray] = []
    last_flush = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as writer, \
            tqdm(total=len(todo_paths), desc="Computing bottlenecks", unit="img") as bar:
        writes: list[Future] = []
        for good, batch, bad in decoded_batches(todo_paths, input_size, input_size, batch_size):
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
