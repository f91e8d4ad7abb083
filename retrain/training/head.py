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

from ..errors import Log, UserError, option_name, option_value
from ..options import default
from .batches import BatchSource, sample_rows
from .class_balance import CLASS_WEIGHTS, class_weights
from .early_stopping import EarlyStopping, loss_and_accuracy
from .head_step import StepOptions, head_step, seeded_generator
from .optimizers import OPTIMIZERS, SCHEDULES, Optimizer, learning_rate_at
from .unknown import UnknownScore


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
    """The trained layers: ``softmax`` of dense layers with ReLU between them (Poets' head is one layer).

    ``temperature`` divides the logits before the softmax (``--calibrate``): the top-1 stays, the confidence
    is rescaled; 1 is Poets' softmax and adds no op to the exported graph. ``unknown`` is the "none of these"
    score on the same features (``--unknown_quantile``), exported as a second output; None: no such output.
    """
    layers: list[DenseLayer]
    temperature: float = 1.0
    unknown: UnknownScore | None = None

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

    def logit_error(self, feature_error: np.ndarray) -> np.ndarray:
        """The most each logit can move when each feature may be off by ``feature_error`` (``[N, D]``).

        A dense layer moves output j by at most sum_i |W_ij| e_i; ReLU moves nothing further.
        """
        error = feature_error.astype(np.float64)
        for layer in self.layers:
            error = error @ np.abs(layer.weights.astype(np.float64))
        return error / self.temperature

    def logits_of(self, features: np.ndarray) -> np.ndarray:
        """The logits before the temperature, in float32 as the exported graph computes them (``[N, classes]``)."""
        outputs = features.astype(np.float32)
        for number, layer in enumerate(self.layers):
            if number:
                outputs = np.maximum(outputs, 0)
            outputs = outputs @ layer.weights + layer.biases
        return outputs

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        outputs = self.logits_of(features)
        if self.temperature != 1.0:
            outputs = outputs / np.float32(self.temperature)
        outputs -= outputs.max(axis=1, keepdims=True)
        exp = np.exp(outputs)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class TrainingConfig:
    """How the head is trained; every check of these values lives here, for the CLI and the library alike.

    The defaults are Poets' head and loop: one softmax layer, plain SGD at
    0.01, 4000 steps; each other option is off until set.
    """
    steps: int = default("how_many_training_steps")
    learning_rate: float = default("learning_rate", "retrain")
    train_batch_size: int = default("train_batch_size")
    validation_batch_size: int = default("validation_batch_size")
    eval_step_interval: int = default("eval_step_interval")
    seed: int | None = default("random_seed")
    # width of a Dense+ReLU layer before the softmax; None: Poets' linear head
    hidden_units: int | None = default("hidden_units")
    dropout: float = default("dropout")
    label_smoothing: float = default("label_smoothing")
    optimizer: str = default("optimizer")
    learning_rate_schedule: str = default("learning_rate_schedule")
    weight_decay: float = default("weight_decay")
    class_weight: str = default("class_weight")
    # evaluations without a lower full-validation loss; None: off
    early_stopping_patience: int | None = default("early_stopping_patience")

    def __post_init__(self) -> None:
        for option, value in (("how_many_training_steps", self.steps), ("train_batch_size", self.train_batch_size),
                              ("validation_batch_size", self.validation_batch_size),
                              ("eval_step_interval", self.eval_step_interval), ("hidden_units", self.hidden_units),
                              ("early_stopping_patience", self.early_stopping_patience)):
            # -1 means "all rows" for the batch sizes, as in Poets
            if value is not None and value < 1 and not (option.endswith("batch_size") and value == -1):
                raise UserError(f"{option_name(option)} must be at least 1, got {value}")
        if self.learning_rate <= 0:
            raise UserError(f"{option_name('learning_rate')} must be positive, got {self.learning_rate}")
        for option, value in (("dropout", self.dropout), ("label_smoothing", self.label_smoothing)):
            if not 0 <= value < 1:
                raise UserError(f"{option_name(option)} must be from 0 to under 1, got {value}")
        if not self.weight_decay >= 0:
            raise UserError(f"{option_name('weight_decay')} must be 0 or more, got {self.weight_decay}")
        for option, value, choices in (("optimizer", self.optimizer, OPTIMIZERS),
                                       ("learning_rate_schedule", self.learning_rate_schedule, SCHEDULES),
                                       ("class_weight", self.class_weight, CLASS_WEIGHTS)):
            if value not in choices:
                raise UserError(f"{option_value(option, repr(value))} is unknown; use one of {', '.join(choices)}")

    @property
    def draws(self) -> int:
        """How often training asks its ``BatchSource`` for data: once per run of steps between evaluations."""
        return math.ceil(self.steps / self.eval_step_interval)


def step_options(config: TrainingConfig, train_labels: np.ndarray | None, num_classes: int) -> StepOptions:
    """What of ``config`` shapes the loss (dropout, label smoothing, class weights), for either training stage.

    Args:
        config: the head's options.
        train_labels: every training row's class (views included); needed for ``class_weight`` balanced.
        num_classes: the number of classes.

    Returns:
        The step options.
    """
    return StepOptions(config.dropout, config.label_smoothing,
                       class_weights(config.class_weight, train_labels, num_classes))


@dataclass
class EvalPoint:
    """Metrics at one evaluation step (validation is None without validation images)."""
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_count: int
    validation_loss: float | None = None


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


def _initial_layers(rng: np.random.Generator, sizes: list[int]) -> list[tuple]:
    """Variables of the dense layers from ``sizes[0]`` inputs to ``sizes[-1]`` classes.

    The softmax layer starts near zero, as in Poets; a hidden ReLU layer gets
    He's scale, or its outputs would start too small to learn from.
    """
    import tensorflow as tf
    layers = []
    for number, (inputs, outputs) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = number == len(sizes) - 2
        prefix = "final" if last else f"hidden_{number}"
        initial = tf.random.stateless_truncated_normal([inputs, outputs], seed=rng.integers(0, 2 ** 31, size=2),
                                                       stddev=0.001 if last else math.sqrt(2 / inputs))
        layers.append((tf.Variable(initial, name=f"{prefix}_weights"),
                       tf.Variable(tf.zeros([outputs]), name=f"{prefix}_biases")))
    return layers


def train_head(batches: BatchSource, feature_size: int, num_classes: int, config: TrainingConfig,
               validation: tuple[np.ndarray, np.ndarray] | None = None,
               on_eval: Callable[[EvalPoint], None] | None = None,
               on_checkpoint: Callable[[int, Head], None] | None = None,
               checkpoint_every: int = 0, train_labels: np.ndarray | None = None, log: Log | None = None) -> Head:
    """Train the head on batches from ``batches``; evaluate every ``eval_step_interval`` steps.

    ``train_labels`` (the whole training set's) is needed for ``class_weight``
    balanced, as a draw may show only part of the set. With early stopping,
    the weights with the lowest full-validation loss are returned.
    """
    import tensorflow as tf
    has_validation = validation is not None and len(validation[1]) > 0
    if config.early_stopping_patience and not has_validation:
        raise UserError(f"{option_name('early_stopping_patience')} needs validation images; raise "
                        f"{option_name('validation_percentage')} above 0")
    if config.class_weight != "none" and train_labels is None:
        raise ValueError("class_weight needs the training labels")
    rng = np.random.default_rng(config.seed)
    generator = seeded_generator(config.seed)
    hidden = [config.hidden_units] if config.hidden_units else []
    layers = _initial_layers(rng, [feature_size, *hidden, num_classes])
    optimizer = Optimizer(config.optimizer, [v for layer in layers for v in layer], [True, False] * len(layers),
                          config.weight_decay)
    options = step_options(config, train_labels, num_classes)
    batch_size = tf.constant(config.train_batch_size, tf.int32)

    # Features keep their stored precision (float16 from the cache: half the memory) and are cast per batch.
    # Each step is kept to a dozen ops, as TensorFlow's cost here is per op, not per FLOP: all steps' rows are
    # drawn at once, back-propagation is written out (head_step.py), loss and accuracy are computed once.
    # Written with tf.cond/tf.while_loop and compiled with autograph=False: AutoGraph would write generated
    # source to a temporary file, which fails (with a traceback) when the disk is full.
    def run_steps(features, labels, steps, first_step):
        count = tf.shape(labels, out_type=tf.int32)[0]
        rows = tf.cond(batch_size > 0,
                       lambda: generator.uniform(tf.stack([steps, batch_size]), 0, count, dtype=tf.int32),
                       lambda: tf.tile(tf.range(count)[tf.newaxis], tf.stack([steps, 1])))
        rows_per_step = tf.cast(tf.shape(rows)[1], tf.float32)

        def step(index, logits, batch_labels):
            batch_features = tf.cast(tf.gather(features, rows[index]), tf.float32)
            batch_labels = tf.gather(labels, rows[index])
            rate = learning_rate_at(config.learning_rate, config.learning_rate_schedule, first_step + index,
                                    config.steps)
            scale = (rate if optimizer.folds_learning_rate else 1.0) / rows_per_step  # the batch mean's gradient
            logits, gradients, _ = head_step(layers, batch_features, batch_labels, options, scale, generator)
            with tf.control_dependencies(optimizer.updates(gradients, rate, first_step + index)):
                return index + 1, tf.identity(logits), tf.identity(batch_labels)

        _, logits, batch_labels = tf.while_loop(
            lambda index, *_: index < steps, step,
            [tf.constant(0), tf.zeros([0, num_classes]), tf.zeros([0], tf.int32)],
            shape_invariants=[tf.TensorShape([]), tf.TensorShape([None, num_classes]), tf.TensorShape([None])])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_labels, logits=logits))
        predicted = tf.argmax(logits, 1, output_type=tf.int32)
        return loss, tf.reduce_mean(tf.cast(tf.equal(predicted, batch_labels), tf.float32))

    compiled = tf.function(run_steps, autograph=False)
    steps_for: dict = {}  # dtype -> concrete function: calling one skips tf.function's per-call lookup

    def run(features, labels, steps: int, first_step: int):
        if features.dtype not in steps_for:
            steps_for[features.dtype] = compiled.get_concrete_function(
                tf.TensorSpec([None, feature_size], features.dtype), tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32))
        return steps_for[features.dtype](features, labels, tf.constant(steps, tf.int32),
                                         tf.constant(first_step, tf.int32))

    def snapshot() -> Head:
        return Head([DenseLayer(weights.numpy(), biases.numpy()) for weights, biases in layers])

    def evaluate(step: int, loss, accuracy) -> EvalPoint:
        """Validation on a random batch, or on the whole set for early stopping and at the end."""
        validation_loss = validation_accuracy = None
        count = 0
        if has_validation:
            whole = stopping is not None or step == config.steps
            rows = None if whole else sample_rows(rng, len(validation[1]), config.validation_batch_size)
            validation_loss, validation_accuracy = loss_and_accuracy(snapshot().predict_proba, *validation, rows)
            count = len(validation[1]) if rows is None else len(rows)
        return EvalPoint(step, float(accuracy), float(loss), validation_accuracy, count, validation_loss)

    stopping = EarlyStopping(config.early_stopping_patience) if config.early_stopping_patience else None
    interval = config.eval_step_interval  # at least 1: TrainingConfig checks it
    stops = sorted({*range(interval, config.steps, interval),
                    *(range(checkpoint_every, config.steps, checkpoint_every) if checkpoint_every > 0 else ()),
                    config.steps})
    done = 0
    converted: tuple = (None, None, None)  # (array, its tensors): convert each (large) draw once, not per call
    for stop in stops:
        while done < stop:
            features, labels = batches(rng)
            if features is not converted[0]:
                converted = (features, _as_tensor(features), tf.constant(labels, tf.int32))
            steps = stop - done
            loss, accuracy = run(*converted[1:], steps, done)
            done += steps
        if (on_eval or stopping) and (done % interval == 0 or done == config.steps):
            point = evaluate(done, loss, accuracy)
            if on_eval:
                on_eval(point)
            if stopping and stopping.should_stop(done, point.validation_loss, snapshot):
                break
        if on_checkpoint and checkpoint_every > 0 and done % checkpoint_every == 0 and done != config.steps:
            on_checkpoint(done, snapshot())
    if stopping is None:
        return snapshot()
    if log:
        restored = f"the weights of step {stopping.best_step} (lowest validation loss {stopping.best_loss:.4f})"
        log(f"Early stopping at step {done}: no lower validation loss in {stopping.patience} evaluations; "
            f"restored {restored}" if done < config.steps else f"Restored {restored}")
    return stopping.best
