"""Train the new softmax layer on bottleneck vectors.

This is the only part of the network that learns, as in TensorFlow-for-Poets:
one fully connected layer and a softmax, trained with plain gradient descent
on random mini-batches. The steps between two evaluations run inside one
compiled ``tf.function`` (sampling included), so 4000 steps take seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    from .bottlenecks import FeatureRows


@dataclass
class Head:
    """The trained layer: ``softmax(features @ weights + biases)``."""
    weights: np.ndarray  # [D, C]
    biases: np.ndarray  # [C]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        logits = features.astype(np.float32) @ self.weights + self.biases
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class TrainingConfig:
    steps: int = 4000
    learning_rate: float = 0.01
    train_batch_size: int = 100
    validation_batch_size: int = 100
    eval_step_interval: int = 10
    seed: int | None = None


@dataclass
class EvalPoint:
    """Metrics at one evaluation step (validation is None without validation images)."""
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_count: int


class TrainingPool(Protocol):
    """Where training batches are drawn from.

    ``pool(rng)`` returns (features, labels, sample). With ``sample`` True,
    the steps up to the next evaluation draw their batches from those rows
    in-graph (cached bottlenecks: the whole training set). With False they
    are one step's batch (distortions: freshly distorted images each step).
    """
    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]: ...


def sample_rows(rng: np.random.Generator, count: int, batch_size: int) -> np.ndarray:
    """Poets' sampling: ``batch_size`` random rows with replacement; -1 means all rows."""
    if batch_size < 0:
        return np.arange(count)
    return rng.integers(0, count, size=batch_size)


def cached_pool(features: np.ndarray, labels: np.ndarray) -> TrainingPool:
    """Train on in-memory bottlenecks: the whole set is the pool, sampled in-graph."""
    def pool(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        return features, labels, True
    return pool


def streamed_pool(features: FeatureRows, labels: np.ndarray, config: TrainingConfig,
                  rows_per_chunk: int) -> TrainingPool:
    """Train on more bottlenecks than fit in memory: one large chunk at a time, read sequentially from disk.

    Batches are sampled in-graph from the current chunk. Chunks come in a
    random order, each read once per pass, and each serves an equal share of
    the steps, so over a run sampling stays close to uniform over the whole
    training set while the disk only sees large sequential reads.
    """
    chunks = features.chunks(rows_per_chunk)
    draws = math.ceil(config.steps / max(config.eval_step_interval, 1))
    draws_per_chunk = max(1, draws // len(chunks))
    queue: list[np.ndarray] = []
    current: list[tuple[np.ndarray, np.ndarray]] = []
    calls = [0]

    def pool(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        if calls[0] % draws_per_chunk == 0:
            if not queue:
                queue.extend(chunks[i] for i in rng.permutation(len(chunks)))
            rows = queue.pop()
            current[:] = [(features.read(rows), labels[rows])]
        calls[0] += 1
        return (*current[0], True)
    return pool


def _as_tensor(array: np.ndarray):
    """A tensor over ``array``'s own memory where TensorFlow allows it, else a copy.

    A copy of a multi-GiB feature matrix would double peak memory (and
    ``tf.constant`` briefly needs twice that again). DLPack shares the buffer
    and keeps ``array`` alive as long as the tensor.
    """
    import tensorflow as tf
    if array.size and array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % 64 == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def train_head(pool: TrainingPool, feature_size: int, num_classes: int, config: TrainingConfig,
               validation: tuple[np.ndarray, np.ndarray] | None = None,
               on_eval: Callable[[EvalPoint], None] | None = None,
               on_checkpoint: Callable[[int, Head], None] | None = None,
               checkpoint_every: int = 0) -> Head:
    """Train a softmax layer on batches from ``pool``; report every ``eval_step_interval`` steps."""
    import tensorflow as tf
    if config.steps < 1:
        raise UserError(f"--how_many_training_steps must be at least 1, got {config.steps}")
    rng = np.random.default_rng(config.seed)
    generator = (tf.random.Generator.from_seed(config.seed) if config.seed is not None
                 else tf.random.Generator.from_non_deterministic_state())
    initial = tf.random.stateless_truncated_normal(
        [feature_size, num_classes], seed=rng.integers(0, 2 ** 31, size=2), stddev=0.001)
    weights = tf.Variable(initial, name="final_weights")
    biases = tf.Variable(tf.zeros([num_classes]), name="final_biases")
    learning_rate = tf.constant(config.learning_rate, tf.float32)
    batch_size = tf.constant(config.train_batch_size, tf.int32)

    # Features keep their stored precision (float16 from the cache: half the memory) and are cast per batch.
    # Each step is kept to a dozen ops, as TensorFlow's cost here is per op, not per FLOP: all steps' rows are
    # drawn at once, the fused cross-entropy op yields the gradient, and loss and accuracy are computed once.
    # Written with tf.cond/tf.while_loop and compiled with autograph=False: AutoGraph would write generated
    # source to a temporary file, which fails (with a traceback) when the disk is full.
    def run_steps(features, labels, sample, steps):
        count = tf.shape(labels, out_type=tf.int32)[0]
        rows = tf.cond(tf.logical_and(sample, batch_size > 0),
                       lambda: generator.uniform(tf.stack([steps, batch_size]), 0, count, dtype=tf.int32),
                       lambda: tf.tile(tf.range(count)[tf.newaxis], tf.stack([steps, 1])))
        step_size = learning_rate / tf.cast(tf.shape(rows)[1], tf.float32)  # the batch mean's gradient

        def step(index, logits, batch_labels):
            batch_features = tf.cast(tf.gather(features, rows[index]), tf.float32)
            batch_labels = tf.gather(labels, rows[index])
            logits = tf.matmul(batch_features, weights) + biases
            _, gradient = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=batch_labels)
            gradient = gradient * step_size
            updates = [weights.assign_sub(tf.matmul(batch_features, gradient, transpose_a=True)),
                       biases.assign_sub(tf.reduce_sum(gradient, 0))]
            with tf.control_dependencies(updates):
                return index + 1, tf.identity(logits), tf.identity(batch_labels)

        _, logits, batch_labels = tf.while_loop(
            lambda index, *_: index < steps, step, [tf.constant(0), tf.zeros([0, num_classes]), tf.zeros([0], tf.int32)],
            shape_invariants=[tf.TensorShape([]), tf.TensorShape([None, num_classes]), tf.TensorShape([None])])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_labels, logits=logits))
        predicted = tf.argmax(logits, 1, output_type=tf.int32)
        return loss, tf.reduce_mean(tf.cast(tf.equal(predicted, batch_labels), tf.float32))

    compiled = tf.function(run_steps, autograph=False)
    steps_for: dict = {}  # dtype -> concrete function: calling one skips tf.function's per-call lookup

    def run(features, labels, sample: bool, steps: int):
        if features.dtype not in steps_for:
            steps_for[features.dtype] = compiled.get_concrete_function(
                tf.TensorSpec([None, feature_size], features.dtype), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.int32))
        return steps_for[features.dtype](features, labels, tf.constant(sample), tf.constant(steps, tf.int32))

    def snapshot() -> Head:
        return Head(weights.numpy(), biases.numpy())

    interval = max(config.eval_step_interval, 1)
    stops = sorted({*range(interval, config.steps, interval),
                    *(range(checkpoint_every, config.steps, checkpoint_every) if checkpoint_every > 0 else ()),
                    config.steps})
    done = 0
    converted: tuple = (None, None, None)  # (array, its tensors): convert each (large) pool draw once, not per call
    for stop in stops:
        while done < stop:
            features, labels, sample = pool(rng)
            if features is not converted[0]:
                converted = (features, _as_tensor(features), tf.constant(labels, tf.int32))
            steps = stop - done if sample else 1
            loss, accuracy = run(*converted[1:], sample, steps)
            done += steps
        if on_eval and (done % interval == 0 or done == config.steps):
            validation_accuracy, count = None, 0
            if validation is not None and len(validation[1]):
                rows = sample_rows(rng, len(validation[1]), config.validation_batch_size)
                predictions = snapshot().predict_proba(validation[0][rows]).argmax(axis=1)
                validation_accuracy, count = float(np.mean(predictions == validation[1][rows])), len(rows)
            on_eval(EvalPoint(done, float(accuracy), float(loss), validation_accuracy, count))
        if on_checkpoint and checkpoint_every > 0 and done % checkpoint_every == 0 and done != config.steps:
            on_checkpoint(done, snapshot())
    return snapshot()
