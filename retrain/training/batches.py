"""Where training batches come from: every ``BatchSource`` the head can train on.

``train_head`` calls a source before each run of steps and gets a
``BatchDraw``. Cached bottlenecks (in memory, or streamed from disk beyond the
memory budget) hand over a whole pool of rows, and the compiled training loop
samples its batches from it in-graph. (Distorted images are cached views too,
see ``augment.py``.)
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from ..cache.rows import FeatureRows
from ..errors import Log, option_value

STREAM_CHUNKS_PER_BUDGET = 4  # a streamed chunk takes a quarter of the memory budget: large reads, room to spare


class BatchDraw(NamedTuple):
    """What one call of a ``BatchSource`` gives the training loop: the pool every step's batch is drawn from."""
    features: np.ndarray  # [N, D]
    labels: np.ndarray  # [N]


class BatchSource(Protocol):
    """Called with the run's random generator before each run of training steps."""
    def __call__(self, rng: np.random.Generator) -> BatchDraw: ...


def sample_rows(rng: np.random.Generator, count: int, batch_size: int) -> np.ndarray:
    """Poets' sampling: ``batch_size`` random rows with replacement; -1 means all rows."""
    if batch_size < 0:
        return np.arange(count)
    return rng.integers(0, count, size=batch_size)


def in_memory_batches(features: np.ndarray, labels: np.ndarray) -> BatchSource:
    """Train on in-memory bottlenecks: the whole set is the pool, sampled in-graph."""
    def source(rng: np.random.Generator) -> BatchDraw:
        return BatchDraw(features, labels)
    return source


def streamed_batches(features: FeatureRows, labels: np.ndarray, draws: int, rows_per_chunk: int) -> BatchSource:
    """Train on more bottlenecks than fit in memory: one large chunk at a time, read sequentially from disk.

    Batches are sampled in-graph from the current chunk. Chunks come in a
    random order, each read once per pass, and each serves an equal share of
    the steps, so over a run sampling stays close to uniform over the whole
    training set while the disk only sees large sequential reads. ``draws``
    is how often training will call the source (``TrainingConfig.draws``).
    """
    chunks = features.chunks(rows_per_chunk)
    if len(chunks) > draws:
        # Too few draws to visit every chunk once: each draw is a random sample of the whole set instead
        # (sparse reads, slower), or the chunks never drawn would never be trained on.
        def sampled(rng: np.random.Generator) -> BatchDraw:
            rows = np.sort(rng.choice(len(features), size=rows_per_chunk, replace=False))
            return BatchDraw(features.read(rows), labels[rows])
        return sampled
    draws_per_chunk = max(1, draws // len(chunks))
    queue: list[np.ndarray] = []
    current: list[BatchDraw] = []
    calls = [0]

    def source(rng: np.random.Generator) -> BatchDraw:
        if calls[0] % draws_per_chunk == 0:
            if not queue:
                queue.extend(chunks[i] for i in rng.permutation(len(chunks)))
            rows = queue.pop()
            current[:] = [BatchDraw(features.read(rows), labels[rows])]
        calls[0] += 1
        return current[0]
    return source


def bottleneck_batches(features: np.ndarray | FeatureRows, labels: np.ndarray, draws: int,
                       memory_budget_gb: float, log: Log) -> BatchSource:
    """Training batches from cached bottlenecks: in memory, or streamed when beyond the memory budget."""
    if not isinstance(features, FeatureRows):
        return in_memory_batches(features, labels)
    budget = option_value("memory_budget_gb", f"{memory_budget_gb:g}")
    log(f"Bottlenecks ({features.nbytes / 2 ** 30:.1f} GiB) exceed {budget}: streaming them from the cache in large "
        f"chunks")
    row_bytes = features.nbytes / max(len(features), 1) or 1
    rows_per_chunk = int(memory_budget_gb * 2 ** 30 / STREAM_CHUNKS_PER_BUDGET / row_bytes)
    return streamed_batches(features, labels, draws, max(rows_per_chunk, 1))
