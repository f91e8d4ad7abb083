"""Chosen cached vectors, read from open shards on demand: into memory, or streamed.

``FeatureRows`` is how training uses more vectors than fit in memory: any
selection is read with large sequential reads, and ``chunks`` groups rows in
disk order so a pass over them reads each byte once.
"""
from __future__ import annotations

from typing import Callable

import h5py
import numpy as np

READ_CHUNK_BYTES = 64 << 20  # one read from a shard: large and sequential, yet small next to any memory budget
SPARSE_READ_FRACTION = 16  # wanted rows fill less than 1/16 of a slab: fetch just those rows instead
SCORE_ROWS = 8192  # rows scored at once: scoring a big (or streamed) split needs little memory


def rows_per_read(dataset: h5py.Dataset) -> int:
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

    def joined(self, other: FeatureRows) -> FeatureRows:
        """These rows followed by ``other``'s, all still on disk (training rows and their augmented views)."""
        shards = np.concatenate([self.shard, other.shard + len(self.datasets)])
        return FeatureRows(self.datasets + other.datasets, shards,
                           np.concatenate([self.row, other.row]), self.shape[1])

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
            dataset, span = self.datasets[number], rows_per_read(self.datasets[number])
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


def within_budget(rows: FeatureRows, memory_budget_gb: float) -> np.ndarray | FeatureRows:
    """``rows`` read into memory if they fit ``memory_budget_gb``, else left on disk to be streamed."""
    return rows.read() if rows.nbytes <= memory_budget_gb * 2 ** 30 else rows


def score_rows(predict_proba: Callable[[np.ndarray], np.ndarray], features: np.ndarray | FeatureRows,
               rows: np.ndarray) -> np.ndarray:
    """``predict_proba(features[rows])``, ``SCORE_ROWS`` at a time: the rows are never all in memory at once."""
    chunks = [predict_proba(features[rows[start:start + SCORE_ROWS]]) for start in range(0, len(rows), SCORE_ROWS)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
