"""Train the new softmax layer on bottleneck vectors.

This is the only part of the network that learns, as in TensorFlow-for-Poets:
one fully connected layer and a softmax, trained with plain gradient descent
on random mini-batches. The steps between two evaluations run inside one
compiled ``tf.function`` (sampling included), so 4000 steps take seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .errors import UserError


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

    @tf.function(input_signature=[tf.TensorSpec([None, feature_size], tf.float32), tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.int32)])
    def run_steps(features, labels, sample, steps):
        loss, accuracy = tf.constant(0.0), tf.constant(0.0)
        count = tf.shape(labels, out_type=tf.int32)[0]
        for _ in tf.range(steps):
            if sample and batch_size > 0:
                rows = generator.uniform([batch_size], 0, count, dtype=tf.int32)
                batch_features, batch_labels = tf.gather(features, rows), tf.gather(labels, rows)
            else:
                batch_features, batch_labels = features, labels
            with tf.GradientTape() as tape:
                logits = tf.matmul(batch_features, weights) + biases
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_labels,
                                                                                     logits=logits))
            weight_gradient, bias_gradient = tape.gradient(loss, [weights, biases])
            weights.assign_sub(learning_rate * weight_gradient)
            biases.assign_sub(learning_rate * bias_gradient)
            predicted = tf.argmax(logits, 1, output_type=tf.int32)
            accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, batch_labels), tf.float32))
        return loss, accuracy

    def snapshot() -> Head:
        return Head(weights.numpy(), biases.numpy())

    interval = max(config.eval_step_interval, 1)
    stops = sorted({*range(interval, config.steps, interval),
                    *(range(checkpoint_every, config.steps, checkpoint_every) if checkpoint_every > 0 else ()),
                    config.steps})
    done = 0
    tensors: dict[int, tuple] = {}  # convert the (large) cached pool to tensors once, not every interval
    for stop in stops:
        while done < stop:
            features, labels, sample = pool(rng)
            if id(features) not in tensors:
                tensors = {id(features): (tf.constant(features, tf.float32), tf.constant(labels, tf.int32))}
            steps = stop - done if sample else 1
            loss, accuracy = run_steps(*tensors[id(features)], tf.constant(sample), tf.constant(steps, tf.int32))
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
