"""Train the new layers on bottleneck vectors.

This is the only part of the network that learns, as in TensorFlow-for-Poets:
by default one fully connected layer and a softmax, trained with plain
gradient descent on random mini-batches. The steps between two evaluations
run inside one compiled ``tf.function`` (sampling included), so 4000 steps
take seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .batches import BatchSource, sample_rows
from .errors import UserError


@dataclass
class DenseLayer:
    """``inputs @ weights + biases``."""
    weights: np.ndarray  # [D_in, D_out]
    biases: np.ndarray  # [D_out]


def dense_logits(features, layers: Sequence[tuple], name: str | None = None):
    """Logits of dense ``(weights, biases)`` layers with ReLU between them, as TensorFlow ops.

    One definition for training (variables) and export (constants), so the
    two can't compute different things; ``name`` names the last addition.
    """
    import tensorflow as tf
    outputs = features
    for number, (weights, biases) in enumerate(layers):
        if number:
            outputs = tf.nn.relu(outputs)
        outputs = tf.add(tf.matmul(outputs, weights), biases, name=name if number == len(layers) - 1 else None)
    return outputs


@dataclass
class Head:
    """The trained layers: ``softmax`` of dense layers with ReLU between them (Poets' head is one layer)."""
    layers: list[DenseLayer]

    @classmethod
    def linear(cls, weights: np.ndarray, biases: np.ndarray) -> Head:
        """Poets' head: ``softmax(features @ weights + biases)``."""
        return cls([DenseLayer(weights, biases)])

    def logits(self, features, name: str | None = None):
        """The logits as TensorFlow ops with the weights as named constants (``final_weights`` for the last)."""
        import tensorflow as tf
        count = len(self.layers)
        constants = [(tf.constant(layer.weights, name=f"{prefix}_weights"),
                      tf.constant(layer.biases, name=f"{prefix}_biases"))
                     for number, layer in enumerate(self.layers)
                     for prefix in ["final" if number == count - 1 else f"hidden_{number}"]]
        return dense_logits(features, constants, name)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        outputs = features.astype(np.float32)
        for number, layer in enumerate(self.layers):
            if number:
                outputs = np.maximum(outputs, 0)
            outputs = outputs @ layer.weights + layer.biases
        outputs -= outputs.max(axis=1, keepdims=True)
        exp = np.exp(outputs)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class TrainingConfig:
    """How the head is trained; every check of these values lives here, for the CLI and the library alike."""
    steps: int = 4000
    learning_rate: float = 0.01
    train_batch_size: int = 100
    validation_batch_size: int = 100
    eval_step_interval: int = 10
    seed: int | None = None

    def __post_init__(self) -> None:
        for flag, value in (("how_many_training_steps", self.steps), ("train_batch_size", self.train_batch_size),
                            ("eval_step_interval", self.eval_step_interval)):
            if value < 1 and not (flag == "train_batch_size" and value == -1):
                raise UserError(f"--{flag} must be at least 1, got {value}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")

    @property
    def draws(self) -> int:
        """How often training asks its ``BatchSource`` for data: once per run of steps between evaluations."""
        return math.ceil(self.steps / self.eval_step_interval)


@dataclass
class EvalPoint:
    """Metrics at one evaluation step (validation is None without validation images)."""
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_count: int


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


def train_head(batches: BatchSource, feature_size: int, num_classes: int, config: TrainingConfig,
               validation: tuple[np.ndarray, np.ndarray] | None = None,
               on_eval: Callable[[EvalPoint], None] | None = None,
               on_checkpoint: Callable[[int, Head], None] | None = None,
               checkpoint_every: int = 0) -> Head:
    """Train a softmax layer on batches from ``batches``; report every ``eval_step_interval`` steps."""
    import tensorflow as tf
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
        return Head.linear(weights.numpy(), biases.numpy())

    interval = max(config.eval_step_interval, 1)
    stops = sorted({*range(interval, config.steps, interval),
                    *(range(checkpoint_every, config.steps, checkpoint_every) if checkpoint_every > 0 else ()),
                    config.steps})
    done = 0
    converted: tuple = (None, None, None)  # (array, its tensors): convert each (large) draw once, not per call
    for stop in stops:
        while done < stop:
            features, labels, sample = batches(rng)
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
