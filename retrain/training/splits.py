"""Each split's usable images with their cached features, as training and testing take them.

``split_images`` decides which image goes where; ``get_bottlenecks`` says
which of them could be read. Records come grouped by split and the usable
positions sorted, so each split is one slice of the cache, found with
``searchsorted``: no lookups by path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache.bottlenecks import Bottlenecks
from ..cache.rows import FeatureRows, score_rows
from ..data.images import SPLITS, ImageRecord
from ..errors import UserError, option_name
from ..metrics import ClassificationReport, classification_report
from .head import Head


@dataclass
class SplitData:
    """One split's usable images, their label indices and bottlenecks (in memory or streamed)."""
    paths: list[Path]
    labels: np.ndarray
    features: np.ndarray | FeatureRows


def split_data(records: list[ImageRecord], bottlenecks: Bottlenecks, labels: list[str]) -> dict[str, SplitData]:
    """Each split's usable records with their features; ``records`` come grouped by split (``split_images``)."""
    index_of = {label: i for i, label in enumerate(labels)}
    data, start = {}, 0
    for split in SPLITS:
        stop = start + sum(record.split == split for record in records)
        first, last = np.searchsorted(bottlenecks.usable, [start, stop])
        usable = [records[i] for i in bottlenecks.usable[first:last]]
        data[split] = SplitData([r.path for r in usable], np.array([index_of[r.label] for r in usable], np.int32),
                                bottlenecks.rows_for(start, stop))
        start = stop
    return data


def check_training_data(train: SplitData, labels: list[str]) -> None:
    """Every class needs a usable training image: a head cannot learn a class it never saw."""
    counts = np.bincount(train.labels, minlength=len(labels))
    empty = [label for label, count in zip(labels, counts) if count == 0]
    if empty:
        raise UserError(f"class(es) {', '.join(repr(e) for e in empty)} have no usable training images; add images "
                        f"to those folders or lower {option_name('testing_percentage')}/"
                        f"{option_name('validation_percentage')}")


def evaluate_test_set(head: Head, test: SplitData, labels: list[str], batch_size: int,
                      rng: np.random.Generator) -> tuple[ClassificationReport, np.ndarray, np.ndarray]:
    """Report on the test set (or a random ``batch_size`` sample of it); also returns rows and probabilities."""
    rows = np.arange(len(test.labels)) if batch_size < 0 else rng.integers(0, len(test.labels), size=batch_size)
    probabilities = score_rows(head.predict_proba, test.features, rows)
    return classification_report(test.labels[rows], probabilities.argmax(axis=1), labels), rows, probabilities
