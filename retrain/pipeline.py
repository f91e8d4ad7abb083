"""The retrain job: the stages in order, from an image folder to exported files.

    split_images -> load_backbone -> get_bottlenecks -> train_head
                 -> classification_report -> export_frozen_graph / labels / sidecar
"""
from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .architectures import ArchitectureSpec
from .backbones import Backbone, load_backbone
from .bottlenecks import DEFAULT_MEMORY_BUDGET_GB, BottleneckCache, Bottlenecks, FeatureRows, get_bottlenecks
from .distortions import Distortions, distorted_pool
from .errors import UserError
from .export import export_frozen_graph, export_saved_model, write_labels, write_sidecar
from .head import EvalPoint, Head, TrainingConfig, TrainingPool, cached_pool, streamed_pool, train_head
from .images import ImageRecord, labels_of, split_images
from .metrics import ClassificationReport, classification_report
from .paths import DEFAULT_BOTTLENECK_DIR, DEFAULT_MODEL_DIR, check_writable_file, check_writable_folder

Report = Callable[[str], None]


@dataclass
class RetrainOptions:
    """Everything one retrain run needs; the CLI flags map onto these one to one."""
    image_dir: str
    architecture: ArchitectureSpec
    output_graph: str = "/tmp/output_graph.pb"
    output_labels: str = "/tmp/output_labels.txt"
    summaries_dir: str = "/tmp/retrain_logs"
    model_dir: str = str(DEFAULT_MODEL_DIR)
    bottleneck_dir: str = str(DEFAULT_BOTTLENECK_DIR)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    testing_percentage: float = 10
    validation_percentage: float = 10
    test_batch_size: int = -1
    print_misclassified_test_images: bool = False
    final_tensor_name: str = "final_result"
    intermediate_output_graphs_dir: str = "/tmp/intermediate_graph/"
    intermediate_store_frequency: int = 0
    distortions: Distortions = field(default_factory=Distortions)
    saved_model_dir: str = ""
    bottleneck_batch_size: int = 16
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB


SPLITS = ("train", "validation", "test")
STREAM_CHUNKS_PER_BUDGET = 4  # a streamed chunk takes a quarter of the memory budget: large reads, room to spare
PREDICT_ROWS = 8192  # rows scored at once: scoring a big (or streamed) test set needs little memory


@dataclass
class SplitData:
    """One split's usable images, their label indices and bottlenecks (in memory or streamed)."""
    paths: list[Path]
    labels: np.ndarray
    features: np.ndarray | FeatureRows


@dataclass
class RetrainResult:
    labels: list[str]
    test_report: ClassificationReport | None
    bottlenecks: Bottlenecks
    head: Head
    history: list[EvalPoint]


def _split_data(records: list[ImageRecord], bottlenecks: Bottlenecks, labels: list[str]) -> dict[str, SplitData]:
    row_of = {path: row for row, path in enumerate(bottlenecks.paths)}
    index_of = {label: i for i, label in enumerate(labels)}
    data = {}
    for split in SPLITS:
        usable = [r for r in records if r.split == split and r.path in row_of]
        rows = np.array([row_of[r.path] for r in usable], dtype=np.int64)
        data[split] = SplitData([r.path for r in usable], np.array([index_of[r.label] for r in usable], np.int32),
                                select_rows(bottlenecks.features, rows))
    return data


def select_rows(features: np.ndarray | FeatureRows, rows: np.ndarray) -> np.ndarray | FeatureRows:
    """Rows of the features without copying where possible.

    Images are fed to the cache grouped by split, so in memory each split is
    a contiguous block and a view of it costs nothing; streamed rows stay
    streamed.
    """
    if isinstance(features, FeatureRows):
        return features.subset(rows)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
        return features[rows[0]:rows[-1] + 1]
    return features[rows]


def _check_training_data(train: SplitData, labels: list[str]) -> None:
    counts = np.bincount(train.labels, minlength=len(labels))
    empty = [label for label, count in zip(labels, counts) if count == 0]
    if empty:
        raise UserError(f"class(es) {', '.join(repr(e) for e in empty)} have no usable training images; add images "
                        f"to those folders or lower --testing_percentage/--validation_percentage")


class _Summaries:
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
                            f"space or choose another --summaries_dir") from None

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
        def write(steps, train_accuracy, cross_entropy, validation_steps, validation_accuracy):
            write_series(self.train, ("accuracy", "cross_entropy"), steps, train_accuracy, cross_entropy)
            write_series(self.validation, ("accuracy",), validation_steps, validation_accuracy)

        with self._write_errors():
            write(tf.constant([p.step for p in self.points], tf.int64),
                  tf.constant([p.train_accuracy for p in self.points], tf.float32),
                  tf.constant([p.cross_entropy for p in self.points], tf.float32),
                  tf.constant([p.step for p in validated], tf.int64),
                  tf.constant([p.validation_accuracy for p in validated], tf.float32))
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


def _eval_printer(steps: int, report: Report) -> Callable[[EvalPoint], None]:
    """Print Poets-style lines, but only ~20 of them however often we evaluate."""
    every = max(1, steps // 20)
    last_printed = [0]

    def on_eval(point: EvalPoint) -> None:
        if point.step - last_printed[0] < every and point.step != steps:
            return
        last_printed[0] = point.step
        validation = ("" if point.validation_accuracy is None else
                      f", validation accuracy = {point.validation_accuracy * 100:.1f}% (N={point.validation_count})")
        report(f"Step {point.step}: train accuracy = {point.train_accuracy * 100:.1f}%, "
               f"cross entropy = {point.cross_entropy:.4f}{validation}")
    return on_eval


def bottleneck_pool(train: SplitData, training: TrainingConfig, memory_budget_gb: float,
                    report: Report) -> TrainingPool:
    """Training batches from cached bottlenecks: in memory, or streamed when beyond the memory budget."""
    if not isinstance(train.features, FeatureRows):
        return cached_pool(train.features, train.labels)
    report(f"Bottlenecks ({train.features.nbytes / 2 ** 30:.1f} GiB) exceed --memory_budget_gb "
           f"{memory_budget_gb:g}: streaming them from the cache in large chunks")
    row_bytes = train.features.nbytes / max(len(train.features), 1) or 1
    rows_per_chunk = int(memory_budget_gb * 2 ** 30 / STREAM_CHUNKS_PER_BUDGET / row_bytes)
    return streamed_pool(train.features, train.labels, training, max(rows_per_chunk, 1))


def evaluate_test_set(head: Head, test: SplitData, labels: list[str], batch_size: int,
                      rng: np.random.Generator) -> tuple[ClassificationReport, np.ndarray, np.ndarray]:
    """Report on the test set (or a random ``batch_size`` sample of it); also returns rows and predictions."""
    rows = np.arange(len(test.labels)) if batch_size < 0 else rng.integers(0, len(test.labels), size=batch_size)
    predictions = np.concatenate([head.predict_proba(test.features[rows[i:i + PREDICT_ROWS]]).argmax(axis=1)
                                  for i in range(0, len(rows), PREDICT_ROWS)] or [np.zeros(0, np.int64)])
    return classification_report(test.labels[rows], predictions, labels), rows, predictions


def _check_outputs_writable(options: RetrainOptions) -> None:
    """Fail in seconds, not after the bottlenecks are computed, when an output cannot be written."""
    check_writable_file(options.output_graph, "--output_graph")
    check_writable_file(options.output_labels, "--output_labels")
    check_writable_folder(options.bottleneck_dir, "--bottleneck_dir")
    check_writable_folder(options.summaries_dir, "--summaries_dir")
    if options.intermediate_store_frequency > 0:
        check_writable_folder(options.intermediate_output_graphs_dir, "--intermediate_output_graphs_dir")
    if options.saved_model_dir:
        check_writable_folder(Path(options.saved_model_dir).parent, "--saved_model_dir")


def run_retrain(options: RetrainOptions, report: Report = print) -> RetrainResult:
    """Run the whole job and write the outputs; returns what it measured."""
    records = split_images(options.image_dir, options.testing_percentage, options.validation_percentage)
    labels = labels_of(records)
    records = sorted(records, key=lambda r: SPLITS.index(r.split))  # splits become contiguous rows, see select_rows
    counts = {split: sum(r.split == split for r in records) for split in SPLITS}
    report(f"Found {len(records)} images in {len(labels)} classes: {counts['train']} train, "
           f"{counts['validation']} validation, {counts['test']} test")
    _check_outputs_writable(options)
    backbone = load_backbone(options.architecture, options.model_dir)
    cache = BottleneckCache(options.bottleneck_dir, backbone.spec.cache_id, backbone.feature_size)
    bottlenecks = get_bottlenecks([r.path for r in records], backbone, backbone.input_size, cache,
                                  batch_size=options.bottleneck_batch_size, report=report,
                                  memory_budget_gb=options.memory_budget_gb)
    if bottlenecks.unreadable:
        report(f"Skipped {len(bottlenecks.unreadable)} unreadable image(s) of {len(records)}")
    data = _split_data(records, bottlenecks, labels)
    _check_training_data(data["train"], labels)

    summaries = _Summaries(options.summaries_dir)
    printer = _eval_printer(options.training.steps, report)
    history: list[EvalPoint] = []

    def on_eval(point: EvalPoint) -> None:
        history.append(point)
        summaries.write_eval(point)
        printer(point)

    def on_checkpoint(step: int, head: Head) -> None:
        path = Path(options.intermediate_output_graphs_dir) / f"intermediate_{step}.pb"
        export_frozen_graph(backbone, head, path, options.final_tensor_name)
        report(f"Saved intermediate graph {path}")

    train = data["train"]
    if options.distortions.enabled:
        report("Distortions are on: every training step decodes and runs the backbone afresh (slow)")
        pool = distorted_pool(train.paths, train.labels, backbone, options.distortions,
                              options.training.train_batch_size)
    else:
        pool = bottleneck_pool(train, options.training, options.memory_budget_gb, report)
    validation = data["validation"]
    head = train_head(pool, backbone.feature_size, len(labels), options.training,
                      validation=(validation.features, validation.labels) if len(validation.labels) else None,
                      on_eval=on_eval, on_checkpoint=on_checkpoint,
                      checkpoint_every=options.intermediate_store_frequency)

    test_report = None
    test = data["test"]
    if len(test.labels):
        rng = np.random.default_rng(options.training.seed)
        test_report, rows, predictions = evaluate_test_set(head, test, labels, options.test_batch_size, rng)
        report(f"Final test accuracy = {test_report.accuracy * 100:.1f}% (N={test_report.count})")
        report(test_report.to_text())
        summaries.write_test(test_report, options.training.steps)
        if options.print_misclassified_test_images:
            report("=== MISCLASSIFIED TEST IMAGES ===")
            for row, predicted in zip(rows, predictions):
                if predicted != test.labels[row]:
                    report(f"{test.paths[row]}  {labels[predicted]} (true: {labels[test.labels[row]]})")
    else:
        report("No test images (--testing_percentage is 0): skipping the test-set report")
    summaries.close()

    _export(options, backbone, head, labels, report)
    return RetrainResult(labels, test_report, bottlenecks, head, history)


def _export(options: RetrainOptions, backbone: Backbone, head: Head, labels: list[str], report: Report) -> None:
    export_frozen_graph(backbone, head, options.output_graph, options.final_tensor_name)
    write_labels(labels, options.output_labels)
    sidecar = write_sidecar(options.output_graph, backbone, labels, options.final_tensor_name)
    report(f"Wrote {options.output_graph}, {options.output_labels} and {sidecar}")
    if options.saved_model_dir:
        export_saved_model(backbone, head, options.saved_model_dir, options.final_tensor_name)
        report(f"Wrote SavedModel {options.saved_model_dir}")


__all__ = ["RetrainOptions", "RetrainResult", "run_retrain"]
