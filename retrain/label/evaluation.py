"""Score a retrained graph on a folder of labelled images, and plot the result.

The folder has the layout retrain reads (one sub-folder per class), so users
can compare models the way practitioners do: accuracy, macro and per-class
precision, recall and F1, and the confusion matrix, on photos the model has
never seen. With a folder of images of none of the labels, it also measures
how well the model's unknown score tells those apart (``unknown_separation``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.images import find_class_folders, iter_image_files, label_for_folder
from ..errors import UserError, option_name, option_value
from ..files import atomic_write, check_plot_path
from ..metrics import ClassificationReport, auroc, classification_report
from ..progress import progress_bar
from .labeler import LABEL_BATCH_SIZE, GraphLabeler


@dataclass
class Evaluation:
    """The report, plus what was scored and what could not be read."""
    report: ClassificationReport
    paths: list[Path]  # the scored images, in the order of the predictions
    truths: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray  # [N, classes], for the HTML report's top-3 and confidences
    unreadable: list[tuple[Path, str]]
    unknown_scores: np.ndarray | None = None  # [N]; None: the model has no unknown score


@dataclass
class UnknownSeparation:
    """How well the unknown score tells the labelled images from images of none of the labels."""
    auroc: float  # the chance an image of none of the labels scores above a labelled one
    known_flagged: int  # labelled images over the threshold
    known_count: int
    unknown_flagged: int  # images of none of the labels over the threshold
    unknown_count: int
    unreadable: list[tuple[Path, str]]  # in the folder of none of the labels


def labelled_images(image_dir: str | os.PathLike, labels: list[str]) -> tuple[list[Path], np.ndarray]:
    """Every image under ``image_dir``'s class folders and its label's index in ``labels``.

    Folder names are matched to labels with retrain's own rule, so a folder
    ``Sun Flowers`` matches the label ``sun flowers``.
    """
    classes = find_class_folders(image_dir)
    index = {label_for_folder(label): i for i, label in enumerate(labels)}
    unknown = [folder.name for label, folder in classes.items() if label not in index]
    if unknown:
        raise UserError(f"class folder(s) {', '.join(unknown)} in {image_dir} are not labels of this graph "
                        f"({', '.join(labels)}); remove them or pass the matching {option_name('labels')}")
    paths, truths = [], []
    for label, folder in classes.items():
        files = iter_image_files(folder)
        paths.extend(files)
        truths.extend([index[label]] * len(files))
    if not paths:
        raise UserError(f"no images in the class folders of {image_dir}; it needs one sub-folder of images per class")
    return paths, np.array(truths, dtype=np.int64)


def evaluate_folder(labeler: GraphLabeler, image_dir: str | os.PathLike,
                    batch_size: int = LABEL_BATCH_SIZE) -> Evaluation:
    """Label every image in ``image_dir``'s class folders and score the labels against the folders."""
    if batch_size < 1:
        raise UserError(f"{option_name('batch_size')} must be at least 1, got {batch_size}")
    paths, truths = labelled_images(image_dir, labeler.labels)
    scored, scores, unknown_scores, unreadable = [], [], [], []
    results = labeler.label_files(paths, batch_size)
    for row, answer in enumerate(progress_bar(results, total=len(paths), desc="Evaluating", unit="img")):
        if answer.probabilities is None:
            unreadable.append((answer.path, answer.error))
        else:
            scored.append(row)
            scores.append(answer.probabilities)
            unknown_scores.append(answer.unknown_score)
    if not scored:
        raise UserError(f"none of the {len(paths)} images in {image_dir} could be read")
    truths, scores = truths[scored], np.stack(scores)
    predictions = scores.argmax(axis=1)
    return Evaluation(classification_report(truths, predictions, labeler.labels), [paths[i] for i in scored],
                      truths, predictions, scores, unreadable,
                      None if labeler.unknown_threshold is None else np.array(unknown_scores, np.float64))


def check_unknown_dir(labeler: GraphLabeler, unknown_dir: str | os.PathLike) -> list[Path]:
    """The images under ``unknown_dir`` (any layout); refuses a model without an unknown score, before any work."""
    if labeler.unknown_note:
        raise UserError(f"{option_name('unknown_dir')} needs a model with an unknown score, and {labeler.unknown_note}")
    if not Path(unknown_dir).is_dir():
        raise UserError(f"{option_value('unknown_dir', unknown_dir)} is not a folder; point it at a folder of images "
                        f"of none of the labels")
    paths = iter_image_files(unknown_dir)
    if not paths:
        raise UserError(f"{option_value('unknown_dir', unknown_dir)} holds no images")
    return paths


def unknown_separation(labeler: GraphLabeler, evaluation: Evaluation, unknown_paths: list[Path],
                       batch_size: int = LABEL_BATCH_SIZE) -> UnknownSeparation:
    """Score the images of none of the labels and compare their unknown scores with the labelled images'.

    Args:
        labeler: a model with an unknown score (``check_unknown_dir`` found the paths).
        evaluation: ``evaluate_folder``'s result on the labelled images, with the same labeler.
        unknown_paths: the images of none of the labels.
        batch_size: images per call through the model.

    Returns:
        The AUROC (``retrain.metrics.auroc``, labelled images the negatives) and how many of each side are flagged.
    """
    scores, unreadable = [], []
    results = labeler.label_files(unknown_paths, batch_size)
    for answer in progress_bar(results, total=len(unknown_paths), desc="Unknown images", unit="img"):
        if answer.probabilities is None:
            unreadable.append((answer.path, answer.error))
        else:
            scores.append(answer.unknown_score)
    if not scores:
        raise UserError(f"none of the {len(unknown_paths)} images in {option_name('unknown_dir')} could be read")
    known, unknown = evaluation.unknown_scores, np.array(scores, np.float64)
    threshold = labeler.unknown_threshold
    return UnknownSeparation(auroc(known, unknown), int((known > threshold).sum()), len(known),
                             int((unknown > threshold).sum()), len(unknown), unreadable)


def plot_report(report: ClassificationReport, path: str | os.PathLike) -> None:
    """Save the confusion matrix and per-class precision/recall/F1 bars as one image.

    Uses matplotlib's object API with the Agg canvas: no display, no global
    pyplot state, so it works on servers and inside other programs.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    file_format = check_plot_path(path, "plot")
    n = len(report.labels)
    figure = Figure(figsize=(4 + 1.6 * n, 2.5 + 0.5 * n), layout="constrained")
    FigureCanvasAgg(figure)
    matrix_axes, bar_axes = figure.subplots(1, 2)
    matrix_axes.imshow(report.confusion, cmap="Blues")
    peak = report.confusion.max(initial=0)
    for (row, column), count in np.ndenumerate(report.confusion):
        matrix_axes.text(column, row, str(count), ha="center", va="center",
                         color="white" if count > peak / 2 else "black")
    matrix_axes.set(xticks=range(n), yticks=range(n), xlabel="predicted label", ylabel="true label",
                    title="Confusion matrix")
    matrix_axes.set_xticklabels(report.labels, rotation=45, ha="right")
    matrix_axes.set_yticklabels(report.labels)
    width = 0.27
    for offset, (name, values) in enumerate((("precision", report.precision), ("recall", report.recall),
                                             ("F1", report.f1))):
        bar_axes.bar(np.arange(n) + (offset - 1) * width, values, width, label=name)
    bar_axes.set(xticks=range(n), ylim=(0, 1.2), yticks=np.linspace(0, 1, 6), title="Per class")
    bar_axes.set_xticklabels(report.labels, rotation=45, ha="right")
    bar_axes.legend(loc="upper center", ncols=3)  # in the headroom above 1, clear of the bars
    figure.suptitle(f"accuracy {report.accuracy:.3f}, macro F1 {report.macro_f1:.3f} (N={report.count})")
    with atomic_write(path) as handle:
        figure.savefig(handle, format=file_format, dpi=100)
