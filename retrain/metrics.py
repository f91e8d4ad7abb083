"""Classification metrics, computed the way scikit-learn names them.

Macro averages weigh every class equally, so a rare class that the model
ignores shows up as a low macro recall instead of hiding behind accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClassificationReport:
    labels: list[str]
    confusion: np.ndarray  # [true, predicted] counts
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.count) if self.count else 0.0

    @property
    def macro_precision(self) -> float:
        return float(self.precision.mean())

    @property
    def macro_recall(self) -> float:
        return float(self.recall.mean())

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    def to_text(self) -> str:
        """Per-class table, macro averages and the confusion matrix, as plain text."""
        width = max([len(label) for label in self.labels] + [12])
        lines = [f"{'':{width}}  precision  recall  f1-score  support"]
        for i, label in enumerate(self.labels):
            lines.append(f"{label:{width}}  {self.precision[i]:9.3f}  {self.recall[i]:6.3f}  {self.f1[i]:8.3f}  "
                         f"{self.support[i]:7d}")
        lines.append(f"{'macro avg':{width}}  {self.macro_precision:9.3f}  {self.macro_recall:6.3f}  "
                     f"{self.macro_f1:8.3f}  {self.count:7d}")
        lines.append(f"{'accuracy':{width}}  {'':9}  {'':6}  {self.accuracy:8.3f}  {self.count:7d}")
        lines.append("")
        lines.append("Confusion matrix (rows: true label, columns: predicted label)")
        cell = max([len(str(int(self.confusion.max(initial=0))))] + [min(len(label), 10) for label in self.labels])
        lines.append(f"{'':{width}}  " + " ".join(f"{label[:10]:>{cell}}" for label in self.labels))
        for i, label in enumerate(self.labels):
            lines.append(f"{label:{width}}  " + " ".join(f"{int(v):>{cell}}" for v in self.confusion[i]))
        return "\n".join(lines)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> ClassificationReport:
    """Per-class and macro precision, recall, F1 and the confusion matrix.

    A class with no predictions (or no examples) gets 0 for the undefined
    ratio, as scikit-learn does with ``zero_division=0``.
    """
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    precision = _safe_divide(true_positive, confusion.sum(axis=0).astype(np.float64))
    recall = _safe_divide(true_positive, confusion.sum(axis=1).astype(np.float64))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return ClassificationReport(list(labels), confusion, precision, recall, f1, confusion.sum(axis=1))


CALIBRATION_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 ("On Calibration of Modern Neural Networks")


@dataclass
class ReliabilityBins:
    """Per equal-width bin of top-1 confidence: how many images fell in it, their mean confidence and accuracy."""
    counts: np.ndarray  # [bins]
    confidence: np.ndarray  # [bins]; 0 where a bin is empty
    accuracy: np.ndarray  # [bins]; 0 where a bin is empty

    @property
    def expected_calibration_error(self) -> float:
        """Sum over bins of (images in the bin / all images) * |accuracy - mean confidence|."""
        total = self.counts.sum()
        return float((self.counts * np.abs(self.accuracy - self.confidence)).sum() / total) if total else 0.0


def reliability_bins(probabilities: np.ndarray, truths: np.ndarray, bins: int = CALIBRATION_BINS) -> ReliabilityBins:
    """Bin each image by its top-1 probability into ``bins`` equal-width bins of (0, 1] and score each bin.

    Args:
        probabilities: ``[N, classes]`` softmax outputs.
        truths: ``[N]`` the true class of each row.
        bins: how many bins.

    Returns:
        The bins' counts, mean confidences and accuracies (bin b holds confidences in (b/bins, (b+1)/bins]).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == np.asarray(truths)).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    return ReliabilityBins(counts.astype(np.int64),
                           _safe_divide(np.bincount(index, confidence, minlength=bins), counts),
                           _safe_divide(np.bincount(index, correct, minlength=bins), counts))


def expected_calibration_error(probabilities: np.ndarray, truths: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE of the top-1 probability over ``bins`` equal-width bins (see ``reliability_bins``)."""
    return reliability_bins(probabilities, truths, bins).expected_calibration_error


def auroc(negative_scores: np.ndarray, positive_scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive scores above a negative, ties counting half.

    Args:
        negative_scores: ``[N]`` scores of the negatives (e.g. images of the known classes).
        positive_scores: ``[M]`` scores of the positives (e.g. images of other things).

    Returns:
        From 0 to 1; 0.5 is chance.
    """
    negative, positive = np.asarray(negative_scores, np.float64), np.asarray(positive_scores, np.float64)
    ranks = _average_ranks(np.concatenate([negative, positive]))
    positive_ranks = ranks[len(negative):].sum()
    return float((positive_ranks - len(positive) * (len(positive) + 1) / 2) / (len(negative) * len(positive)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, tied values sharing their mean rank (the Mann-Whitney U statistic's ranks)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks
