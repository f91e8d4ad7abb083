"""Stage two of fine-tuning: the top blocks and the head together, on cached cut activations.

Stage one is today's fast path: the head alone on pooled features (here the
pooled features come from running the untouched top blocks over the cached
cut rows once). Stage two then trains the top blocks' weights and the head
at a lower learning rate, with Adam, on random batches of cached rows: only
the top blocks run per step, never the frozen part below the cut. Its step
is the head's (``head_step``, with the head's dropout, label smoothing and
class weights) carried on into the blocks, and its update the head's
``Optimizer`` (with the head's weight decay): one loop for both stages.

Its budget is ``--fine_tune_steps``, or ``--fine_tune_epochs`` passes over
the cached training rows (views included), so it grows with the data; with
neither, 150 steps as before. Its rate follows the head's schedules
(``optimizers.learning_rate_at``) after an optional linear warm-up. Once a
few steps are timed, the run prints its plan: rows, passes, steps, batch and
the time it expects.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..cache.rows import FeatureRows
from ..errors import Log, UserError, option_name, option_value
from ..models.cut import TrainableTop
from ..options import FINE_TUNE_STEPS, default
from ..progress import progress_bar
from .early_stopping import EarlyStopping, loss_and_accuracy
from .head import DenseLayer, Head, TrainingConfig, step_options
from .head_step import StepOptions, head_step, seeded_generator
from .keep_or_revert import paired_verdict
from .optimizers import SCHEDULES, Optimizer, learning_rate_at

PREDICT_BATCH = 64  # cut rows per forward pass when computing pooled features
# Steps timed for the plan's estimate, after the first (which also pays for TensorFlow's one-off graph setup).
PLAN_TIMED_STEPS = 3


@dataclass
class FineTuneConfig:
    """What ``--fine_tune_*`` set; ``blocks`` 0 trains only the new layer, as Poets did."""
    blocks: int = default("fine_tune_blocks")
    learning_rate: float = default("fine_tune_learning_rate")
    steps: int | None = default("fine_tune_steps")  # given, it wins over ``epochs``
    batch_size: int = default("fine_tune_batch_size")
    epochs: float | None = default("fine_tune_epochs")  # passes over the cached training rows, views included
    schedule: str = default("fine_tune_schedule")
    warmup: float = default("fine_tune_warmup")  # fraction of the steps

    def __post_init__(self) -> None:
        if self.blocks < 0:
            raise UserError(f"{option_name('fine_tune_blocks')} must be 0 or more, got {self.blocks}")
        if self.blocks and self.steps is not None and self.steps < 1:
            raise UserError(f"{option_name('fine_tune_steps')} must be at least 1, got {self.steps}")
        if self.blocks and self.epochs is not None and not self.epochs > 0:
            raise UserError(f"{option_name('fine_tune_epochs')} must be positive, got {self.epochs}")
        if self.blocks and not 0 <= self.warmup < 1:
            raise UserError(f"{option_name('fine_tune_warmup')} must be from 0 to under 1, got {self.warmup}")
        if self.blocks and self.schedule not in SCHEDULES:
            raise UserError(f"{option_value('fine_tune_schedule', repr(self.schedule))} is unknown; use one of "
                            f"{', '.join(SCHEDULES)}")
        if self.blocks and self.batch_size < 1:
            raise UserError(f"{option_name('fine_tune_batch_size')} must be at least 1, got {self.batch_size}")
        if self.blocks and self.learning_rate <= 0:
            raise UserError(f"{option_name('fine_tune_learning_rate')} must be positive, got {self.learning_rate}")

    def steps_for(self, rows: int) -> int:
        """Stage two's steps on ``rows`` cached training rows: ``steps`` if given, else ``epochs`` passes, else 150.

        Args:
            rows: the training rows stage two samples from, views included.

        Returns:
            At least 1 step; ``epochs`` passes are rounded up to whole batches.
        """
        if self.steps is not None:
            return self.steps
        if self.epochs is None:
            return FINE_TUNE_STEPS
        return max(1, math.ceil(self.epochs * rows / self.batch_size))

    def warmup_steps(self, steps: int) -> int:
        """The first of ``steps`` whose learning rate rises linearly, ``warmup`` of them rounded."""
        return round(self.warmup * steps)


def top_weights(top: TrainableTop) -> list[np.ndarray]:
    """A copy of the top blocks' current weights, for ``restore_top``."""
    return [variable.numpy() for variable in top.variables]


def restore_top(top: TrainableTop, weights: list[np.ndarray]) -> None:
    """Put back the top blocks' weights that ``top_weights`` copied."""
    for variable, value in zip(top.variables, weights):
        variable.assign(value)


def keeps_fine_tuning(stage_one: Head, tuned: Head, untouched_features: np.ndarray, tuned_features: np.ndarray,
                      labels: np.ndarray, log: Log = print) -> bool:
    """Whether the fine-tuned model beats stage one's head on the whole validation set (``keep_or_revert``).

    Args:
        stage_one: the head trained on the untouched top blocks, before stage two.
        tuned: the fine-tuned head.
        untouched_features: the validation images' pooled features through the untouched top blocks.
        tuned_features: the same images' pooled features through the fine-tuned top blocks.
        labels: the validation images' classes.
        log: where the one line with the decision goes.

    Returns:
        True to keep the fine-tuned model.
    """
    predicted = [labels, labels]  # none to compare: the verdict, on N=0, keeps the head alone
    if len(labels):
        predicted = [stage_one.predict_proba(untouched_features).argmax(axis=1),
                     tuned.predict_proba(tuned_features).argmax(axis=1)]
    verdict = paired_verdict(labels, *predicted)
    log(verdict.line())
    return verdict.keep


def pooled_features(top: TrainableTop, rows: np.ndarray | FeatureRows, desc: str = "") -> np.ndarray:
    """The top blocks' pooled output for every cut row (float32), in batches."""
    import tensorflow as tf
    forward = top.compiled_features
    chunks = []
    for start in progress_bar(range(0, len(rows), PREDICT_BATCH), desc=desc or "Running the top blocks",
                              unit="batch", disable=not desc):
        chunks.append(forward(tf.constant(rows[start:start + PREDICT_BATCH])).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _batches(rows: np.ndarray | FeatureRows, labels: np.ndarray, steps: int, batch_size: int,
             rng: np.random.Generator, rows_per_chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` random batches; streamed rows are sampled one large sequential chunk at a time."""
    if not isinstance(rows, FeatureRows):
        for _ in range(steps):
            picked = np.sort(rng.integers(0, len(labels), batch_size))
            yield rows[picked], labels[picked]
        return
    chunks = rows.chunks(rows_per_chunk)
    steps_per_chunk = max(1, -(-steps // len(chunks)))
    done = 0
    while done < steps:
        for chunk in (chunks[i] for i in rng.permutation(len(chunks))):
            held = rows.read(chunk)
            for _ in range(min(steps_per_chunk, steps - done)):
                picked = np.sort(rng.integers(0, len(chunk), batch_size))
                yield held[picked], labels[chunk[picked]]
                done += 1


@dataclass
class Trainer:
    """One compiled step over the top blocks and the head; ``head()`` reads the head's current weights."""
    step: Callable  # (rows [N, H*W*C], labels [N]) -> (loss, batch accuracy)
    head: Callable[[], Head]


def stage_two_gradients(top: TrainableTop, layers: list[tuple], batch, labels, options: StepOptions, generator):
    """The logits and the batch-mean gradient of ``[*top.variables, *head variables]`` for one batch of cut rows.

    The head's own step (``head_step``: its loss, dropout, label smoothing and class weights) back-propagates to
    the pooled features, and TensorFlow carries that on through the top blocks. Symbolic gradients, not a
    GradientTape: the tape does not see ops that import_graph_def created. Builds ops inside a ``tf.function``.

    Args:
        top: the trainable top blocks.
        layers: the head's ``(weights, biases)`` variables.
        batch: cut rows ``[N, H*W*C]``.
        labels: their classes, int32 ``[N]``.
        options: what shapes the loss.
        generator: draws dropout masks.

    Returns:
        ``(logits, gradients)``.
    """
    import tensorflow as tf
    features = top.features(batch)
    scale = 1.0 / tf.cast(tf.shape(labels)[0], tf.float32)  # the batch mean's gradient
    logits, head_gradients, feature_gradient = head_step(layers, features, labels, options, scale, generator,
                                                         feature_gradient=True)
    return logits, [*tf.gradients(features, top.variables, grad_ys=feature_gradient), *head_gradients]


def trainer(top: TrainableTop, head: Head, row_size: int, dtype, config: FineTuneConfig, steps: int,
            options: StepOptions, weight_decay: float, seed: int | None) -> Trainer:
    """Compile the training step once: tracing imports the top blocks' graph, which takes a moment.

    The step is ``stage_two_gradients`` (the head's step carried on into the top blocks) and the head's
    Adam (decoupled ``weight_decay`` on weights and conv kernels, not on
    biases or batch-norm offsets and scales). The learning rate follows ``config``'s warm-up and schedule over
    ``steps``; ``seed`` seeds the dropout masks.
    """
    import tensorflow as tf
    layers = [(tf.Variable(layer.weights), tf.Variable(layer.biases)) for layer in head.layers]
    head_variables = [variable for layer in layers for variable in layer]
    optimizer = Optimizer("adam", [*top.variables, *head_variables],
                          [len(v.shape) > 1 for v in top.variables] + [True, False] * len(layers), weight_decay)
    generator = seeded_generator(seed)
    step_count = tf.Variable(0)

    def train_step(batch, batch_labels):
        step = step_count.assign_add(1) - 1
        rate = learning_rate_at(config.learning_rate, config.schedule, step, steps, config.warmup_steps(steps))
        logits, gradients = stage_two_gradients(top, layers, batch, batch_labels, options, generator)
        with tf.control_dependencies(optimizer.updates(gradients, rate, step)):
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=batch_labels, logits=logits))
            correct = tf.equal(tf.argmax(logits, 1, output_type=tf.int32), batch_labels)
            return loss, tf.reduce_mean(tf.cast(correct, tf.float32))

    compiled = tf.function(train_step, autograph=False).get_concrete_function(
        tf.TensorSpec([None, row_size], dtype), tf.TensorSpec([None], tf.int32))

    def step(batch: np.ndarray, batch_labels: np.ndarray):
        return compiled(tf.constant(batch), tf.constant(batch_labels, tf.int32))
    return Trainer(step, lambda: Head([DenseLayer(w.numpy(), b.numpy()) for w, b in layers]))


def plan_line(config: FineTuneConfig, rows: int, steps: int, step_seconds: list[float], evaluations: int,
              validation_seconds: float) -> str:
    """Stage two's plan in one line: rows, passes, steps, batch, learning rate and the time it expects.

    Args:
        config: the fine-tuning options.
        rows: the cached training rows, views included.
        steps: the steps planned (``config.steps_for(rows)``).
        step_seconds: how long each of the first steps took; the first also pays for one-off setup, so the
            later ones, when there are any, set the pace of the rest.
        evaluations: the validation passes still to come (one per progress line).
        validation_seconds: how long one validation pass took (the one before the first step).

    Returns:
        The line, e.g. ``Fine-tuning plan: the top 2 block(s) and the head on 1200 cached training rows (views
        included), 4.0 passes = 150 steps of 32 rows, Adam at 2e-05, constant; about 2 min (...)``.
    """
    timed = step_seconds[1:] or step_seconds
    pace = sum(timed) / len(timed)
    expected = sum(step_seconds) + pace * (steps - len(step_seconds)) + evaluations * validation_seconds
    warmup = config.warmup_steps(steps)
    rate = f"Adam at {config.learning_rate:g}" + (f", {warmup} warm-up steps" if warmup else "") + (
        ", cosine decay" if config.schedule == "cosine" else ", constant")
    span = f"steps 2-{len(step_seconds)}" if len(step_seconds) > 2 else f"step {len(step_seconds)}"
    how = f"{span} timed at {pace:.2f} s each" + (
        f", {evaluations} validation passes of {validation_seconds:.1f} s" if evaluations else "")
    return (f"Fine-tuning plan: the top {config.blocks} block(s) and the head on {rows} cached training rows (views "
            f"included), {steps * config.batch_size / rows:.1f} passes = {steps} steps of {config.batch_size} rows, "
            f"{rate}; about {_duration(expected)} ({how})")


def _duration(seconds: float) -> str:
    """A time as a person says it: seconds, minutes or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def fine_tune(top: TrainableTop, head: Head, rows: np.ndarray | FeatureRows, labels: np.ndarray,
              config: FineTuneConfig, seed: int | None, log: Log = print, rows_per_chunk: int = 4096,
              validation: tuple[np.ndarray | FeatureRows, np.ndarray] | None = None,
              patience: int | None = None, head_config: TrainingConfig | None = None) -> Head:
    """Train ``top``'s variables (in place) and a copy of ``head`` on cut rows; returns the tuned head.

    With ``validation`` (cut rows and their labels) the whole validation set is scored before the first step
    and at each progress line (a tenth of the steps), and the run ends by saying how fine-tuning changed its
    accuracy: how a user tells whether it pays on their images. With ``patience`` as well, stage two stops
    once that many scores in a row bring no lower validation loss, and the top blocks and head of the best
    one are restored, as the head's ``--early_stopping_patience`` does; the untouched blocks are a candidate
    too, so fine-tuning that only hurts is undone. ``head_config`` is the head's options: its ``dropout``,
    ``label_smoothing``, ``class_weight`` and ``weight_decay`` shape this stage too (None: none of them).
    """
    steps = config.steps_for(len(labels))
    head_config = head_config or TrainingConfig()
    training = trainer(top, head, rows.shape[1], rows.dtype, config, steps,
                       step_options(head_config, labels, len(head.layers[-1].biases)), head_config.weight_decay, seed)
    rng = np.random.default_rng(seed)
    report_every = max(1, steps // 10)
    scored = validation is not None and len(validation[1]) > 0
    stopping = EarlyStopping(patience) if patience and scored else None

    def snapshot() -> tuple[list[np.ndarray], Head]:
        return top_weights(top), training.head()

    def validation_score(current: Head) -> tuple[float, float, str]:
        """Loss, accuracy, and both as words."""
        loss, accuracy = loss_and_accuracy(current.predict_proba, pooled_features(top, validation[0]), validation[1])
        return loss, accuracy, (f"validation accuracy = {accuracy * 100:.1f}% (N={len(validation[1])}), "
                                f"validation cross entropy = {loss:.4f}")

    validation_seconds = 0.0
    if scored:
        started = time.monotonic()
        validation_loss, before, words = validation_score(head)
        validation_seconds = time.monotonic() - started
        log(f"Before fine-tuning: {words}")
        if stopping:
            stopping.should_stop(0, validation_loss, snapshot)
    evaluations = (steps // report_every + (1 if steps % report_every else 0)) if scored else 0
    plan_after = min(1 + PLAN_TIMED_STEPS, report_every, steps)  # before the first progress line
    step_seconds: list[float] = []
    started = time.monotonic()
    for number, (batch, batch_labels) in enumerate(_batches(rows, labels, steps, config.batch_size, rng,
                                                            rows_per_chunk), 1):
        step_started = time.monotonic()
        loss, accuracy = training.step(batch, batch_labels)
        if number <= plan_after:
            step_seconds.append(time.monotonic() - step_started)
            if number == plan_after:
                log(plan_line(config, len(labels), steps, step_seconds, evaluations, validation_seconds))
        if number % report_every and number != steps:
            continue
        line = (f"Fine-tune step {number}/{steps}: batch accuracy = {float(accuracy) * 100:.1f}%, "
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
        restore_top(top, weights)
        restored = (f"the weights of step {stopping.best_step}" if stopping.best_step else
                    "the weights from before fine-tuning") + f" (lowest validation loss {stopping.best_loss:.4f})"
        log(f"Fine-tuning stopped early at step {number}: no lower validation loss in {stopping.patience} "
            f"evaluations; restored {restored}" if number < steps else f"Fine-tuning: restored {restored}")
        after = validation_score(head)[1]
    if scored:
        advice = ("" if after > before or stopping else "; it did not help here: compare a run with "
                  f"{option_value('fine_tune_blocks', '0')}, or add {option_name('early_stopping_patience')} to keep "
                  "the best step")
        log(f"Validation accuracy: {before * 100:.1f}% with the new layer alone, {after * 100:.1f}% after "
            f"fine-tuning (N={len(validation[1])}){advice}")
    return head
