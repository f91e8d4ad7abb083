"""Stage two of fine-tuning: the top blocks and the head together, on cached cut activations.

Stage one is today's fast path: the head alone on pooled features (here the
pooled features come from running the untouched top blocks over the cached
cut rows once). Stage two then trains the top blocks' weights and the head
at a lower learning rate, with Adam, on random batches of cached rows: only
the top blocks run per step, never the frozen part below the cut.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..cache.rows import FeatureRows
from ..errors import Log, UserError, option_name, option_value
from ..models.cut import TrainableTop
from ..options import default
from ..progress import progress_bar
from .early_stopping import EarlyStopping, loss_and_accuracy
from .head import DenseLayer, Head, dense_logits
from .optimizers import ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON

PREDICT_BATCH = 64  # cut rows per forward pass when computing pooled features


@dataclass
class FineTuneConfig:
    """What ``--fine_tune_*`` set; ``blocks`` 0 trains only the new layer, as Poets did."""
    blocks: int = default("fine_tune_blocks")
    learning_rate: float = default("fine_tune_learning_rate")
    steps: int = default("fine_tune_steps")
    batch_size: int = default("fine_tune_batch_size")

    def __post_init__(self) -> None:
        if self.blocks < 0:
            raise UserError(f"{option_name('fine_tune_blocks')} must be 0 or more, got {self.blocks}")
        if self.blocks and self.steps < 1:
            raise UserError(f"{option_name('fine_tune_steps')} must be at least 1, got {self.steps}")
        if self.blocks and self.batch_size < 1:
            raise UserError(f"{option_name('fine_tune_batch_size')} must be at least 1, got {self.batch_size}")
        if self.blocks and self.learning_rate <= 0:
            raise UserError(f"{option_name('fine_tune_learning_rate')} must be positive, got {self.learning_rate}")


def pooled_features(top: TrainableTop, rows: np.ndarray | FeatureRows, desc: str = "") -> np.ndarray:
    """The top blocks' pooled output for every cut row (float32), in batches."""
    import tensorflow as tf
    forward = top.compiled_features
    chunks = []
    for start in progress_bar(range(0, len(rows), PREDICT_BATCH), desc=desc or "Running the top blocks",
                              unit="batch", disable=not desc):
        chunks.append(forward(tf.constant(rows[start:start + PREDICT_BATCH])).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _batches(rows: np.ndarray | FeatureRows, labels: np.ndarray, config: FineTuneConfig, rng: np.random.Generator,
             rows_per_chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``config.steps`` random batches; streamed rows are sampled one large sequential chunk at a time."""
    if not isinstance(rows, FeatureRows):
        for _ in range(config.steps):
            picked = np.sort(rng.integers(0, len(labels), config.batch_size))
            yield rows[picked], labels[picked]
        return
    chunks = rows.chunks(rows_per_chunk)
    steps_per_chunk = max(1, -(-config.steps // len(chunks)))
    done = 0
    while done < config.steps:
        for chunk in (chunks[i] for i in rng.permutation(len(chunks))):
            held = rows.read(chunk)
            for _ in range(min(steps_per_chunk, config.steps - done)):
                picked = np.sort(rng.integers(0, len(chunk), config.batch_size))
                yield held[picked], labels[chunk[picked]]
                done += 1


@dataclass
class Trainer:
    """One compiled Adam step over the top blocks and the head; ``head()`` reads the head's current weights."""
    step: Callable  # (rows [N, H*W*C], labels [N]) -> (loss, batch accuracy)
    head: Callable[[], Head]


def trainer(top: TrainableTop, head: Head, row_size: int, dtype, learning_rate: float) -> Trainer:
    """Compile the training step once: tracing imports the top blocks' graph, which takes a moment."""
    import tensorflow as tf
    layers = [(tf.Variable(layer.weights), tf.Variable(layer.biases)) for layer in head.layers]
    trainable = [*top.variables, *(variable for layer in layers for variable in layer)]
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in trainable]
    step_count = tf.Variable(0.0)

    def train_step(batch, batch_labels):
        logits = dense_logits(top.features(batch), layers)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_labels, logits=logits))
        # Symbolic gradients, not a GradientTape: the tape does not see ops that import_graph_def created.
        gradients = tf.gradients(loss, trainable)
        count = step_count.assign_add(1.0)
        # One fused kernel per variable (Adam's moments and update in one pass over the weights), not ten
        # element-wise ops that each read and write all of them: the top blocks hold millions of weights.
        updates = [tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=mean.handle, v=square.handle, beta1_power=ADAM_BETA_1 ** count,
            beta2_power=ADAM_BETA_2 ** count, lr=learning_rate, beta1=ADAM_BETA_1, beta2=ADAM_BETA_2,
            epsilon=ADAM_EPSILON, grad=gradient)
            for variable, gradient, (mean, square) in zip(trainable, gradients, moments)]
        with tf.control_dependencies(updates):
            correct = tf.equal(tf.argmax(logits, 1, output_type=tf.int32), batch_labels)
            return tf.identity(loss), tf.reduce_mean(tf.cast(correct, tf.float32))

    compiled = tf.function(train_step, autograph=False).get_concrete_function(
        tf.TensorSpec([None, row_size], dtype), tf.TensorSpec([None], tf.int32))

    def step(batch: np.ndarray, batch_labels: np.ndarray):
        return compiled(tf.constant(batch), tf.constant(batch_labels, tf.int32))
    return Trainer(step, lambda: Head([DenseLayer(w.numpy(), b.numpy()) for w, b in layers]))


def fine_tune(top: TrainableTop, head: Head, rows: np.ndarray | FeatureRows, labels: np.ndarray,
              config: FineTuneConfig, seed: int | None, log: Log = print, rows_per_chunk: int = 4096,
              validation: tuple[np.ndarray | FeatureRows, np.ndarray] | None = None,
              patience: int | None = None) -> Head:
    """Train ``top``'s variables (in place) and a copy of ``head`` on cut rows; returns the tuned head.

    With ``validation`` (cut rows and their labels) the whole validation set is scored before the first step
    and at each progress line (a tenth of the steps), and the run ends by saying how fine-tuning changed its
    accuracy: how a user tells whether it pays on their images. With ``patience`` as well, stage two stops
    once that many scores in a row bring no lower validation loss, and the top blocks and head of the best
    one are restored, as the head's ``--early_stopping_patience`` does; the untouched blocks are a candidate
    too, so fine-tuning that only hurts is undone.
    """
    training = trainer(top, head, rows.shape[1], rows.dtype, config.learning_rate)
    rng = np.random.default_rng(seed)
    report_every = max(1, config.steps // 10)
    scored = validation is not None and len(validation[1]) > 0
    stopping = EarlyStopping(patience) if patience and scored else None

    def snapshot() -> tuple[list[np.ndarray], Head]:
        return [variable.numpy() for variable in top.variables], training.head()

    def validation_score(current: Head) -> tuple[float, float, str]:
        """Loss, accuracy, and both as words."""
        loss, accuracy = loss_and_accuracy(current.predict_proba, pooled_features(top, validation[0]), validation[1])
        return loss, accuracy, (f"validation accuracy = {accuracy * 100:.1f}% (N={len(validation[1])}), "
                                f"validation cross entropy = {loss:.4f}")

    if scored:
        validation_loss, before, words = validation_score(head)
        log(f"Before fine-tuning: {words}")
        if stopping:
            stopping.should_stop(0, validation_loss, snapshot)
    started = time.monotonic()
    for number, (batch, batch_labels) in enumerate(_batches(rows, labels, config, rng, rows_per_chunk), 1):
        loss, accuracy = training.step(batch, batch_labels)
        if number % report_every and number != config.steps:
            continue
        line = (f"Fine-tune step {number}/{config.steps}: batch accuracy = {float(accuracy) * 100:.1f}%, "
                f"cross entropy = {float(loss):.4f}")
        if scored:
            validation_loss, after, words = validation_score(training.head())
            line += f", {words}"
        log(f"{line} ({time.monotonic() - started:.0f} s)")
        if stopping and stopping.should_stop(number, validation_loss, snapshot):
            break
    if stopping is None:
        head = training.head()
    else:
        weights, head = stopping.best
        for variable, value in zip(top.variables, weights):
            variable.assign(value)
        restored = (f"the weights of step {stopping.best_step}" if stopping.best_step else
                    "the weights from before fine-tuning") + f" (lowest validation loss {stopping.best_loss:.4f})"
        log(f"Fine-tuning stopped early at step {number}: no lower validation loss in {stopping.patience} "
            f"evaluations; restored {restored}" if number < config.steps else f"Fine-tuning: restored {restored}")
        after = validation_score(head)[1]
    if scored:
        advice = ("" if after > before or stopping else "; it did not help here: compare a run with "
                  f"{option_value('fine_tune_blocks', '0')}, or add {option_name('early_stopping_patience')} to keep "
                  "the best step")
        log(f"Validation accuracy: {before * 100:.1f}% with the new layer alone, {after * 100:.1f}% after "
            f"fine-tuning (N={len(validation[1])}){advice}")
    return head
