"""What training shows as it goes: TensorBoard scalars and about 20 printed lines."""
from __future__ import annotations

import contextlib
import datetime
from pathlib import Path
from typing import Callable, Iterator

from ..errors import Log, UserError, option_name
from ..metrics import ClassificationReport
from .head import EvalPoint


class TrainingSummaries:
    """TensorBoard scalars under ``summaries_dir/<run>/{train,validation}``; never deletes older runs.

    Evaluation points are collected and written by one compiled call: 400
    evaluations make 1200 scalars, and eager ``tf.summary.scalar`` calls cost
    ~2 s of a run that otherwise trains in a few.
    """

    def __init__(self, summaries_dir: str):
        import tensorflow as tf
        run = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        root = Path(summaries_dir) / run
        self.directory = root
        with self._write_errors():
            self.train = tf.summary.create_file_writer(str(root / "train"))
            self.validation = tf.summary.create_file_writer(str(root / "validation"))
        self.points: list[EvalPoint] = []

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """TensorFlow reports a full disk or unwritable folder as an OpError: make it one user-facing line."""
        import tensorflow as tf
        try:
            yield
        except tf.errors.OpError as error:
            reason = error.message.splitlines()[0].rsplit("; ", 1)[-1]
            raise UserError(f"cannot write TensorBoard summaries under {self.directory} ({reason}); free some "
                            f"space or choose another {option_name('summaries_dir')}") from None

    def write_eval(self, point: EvalPoint) -> None:
        self.points.append(point)

    def flush_evals(self) -> None:
        import tensorflow as tf
        if not self.points:
            return
        validated = [p for p in self.points if p.validation_accuracy is not None]

        def write_series(writer, tags, steps, *values):
            def body(index):
                # name_scope(None): tags stay "accuracy", not the loop's "while/accuracy"
                with tf.compat.v1.name_scope(None):
                    written = [tf.summary.scalar(tag, series[index], step=steps[index])
                               for tag, series in zip(tags, values)]
                with tf.control_dependencies(written):
                    return index + 1
            with writer.as_default():
                tf.while_loop(lambda index: index < tf.size(steps), body, [tf.constant(0)])

        # autograph=False: AutoGraph writes generated source to a temporary file, which fails on a full disk.
        @tf.function(autograph=False)
        def write(steps, train_accuracy, cross_entropy, validation_steps, validation_accuracy, validation_loss):
            write_series(self.train, ("accuracy", "cross_entropy"), steps, train_accuracy, cross_entropy)
            write_series(self.validation, ("accuracy", "cross_entropy"), validation_steps, validation_accuracy,
                         validation_loss)

        with self._write_errors():
            write(tf.constant([p.step for p in self.points], tf.int64),
                  tf.constant([p.train_accuracy for p in self.points], tf.float32),
                  tf.constant([p.cross_entropy for p in self.points], tf.float32),
                  tf.constant([p.step for p in validated], tf.int64),
                  tf.constant([p.validation_accuracy for p in validated], tf.float32),
                  tf.constant([p.validation_loss for p in validated], tf.float32))
        self.points = []

    def write_test(self, report: ClassificationReport, step: int) -> None:
        import tensorflow as tf
        with self._write_errors(), self.validation.as_default():
            tf.summary.scalar("test_accuracy", report.accuracy, step=step)
            tf.summary.scalar("test_macro_f1", report.macro_f1, step=step)
            tf.summary.text("test_report", "```\n" + report.to_text() + "\n```", step=step)

    def close(self) -> None:
        self.flush_evals()
        with self._write_errors():
            self.train.close()
            self.validation.close()


def progress_printer(steps: int, log: Log) -> Callable[[EvalPoint], None]:
    """Print Poets-style lines, but only ~20 of them however often we evaluate."""
    every = max(1, steps // 20)
    last_printed = [0]

    def on_eval(point: EvalPoint) -> None:
        if point.step - last_printed[0] < every and point.step != steps:
            return
        last_printed[0] = point.step
        validation = ("" if point.validation_accuracy is None else
                      f", validation accuracy = {point.validation_accuracy * 100:.1f}% (N={point.validation_count})")
        log(f"Step {point.step}: train accuracy = {point.train_accuracy * 100:.1f}%, "
               f"cross entropy = {point.cross_entropy:.4f}{validation}")
    return on_eval
