"""Check every written model file against the model it came from, before anyone is told it was written.

Each artifact is loaded the way a user loads it (format detected by content,
preprocessing from the sidecar beside it) and run on check images whose
answers from the in-memory model (or the source graph) are known. A float
export must pick the same top-1 class on every image; a disagreement means a
broken contract (mean/std, input or output names, label order), the failure
Poets users met only on their phones. Quantised exports are expected to
differ a little: they report agreement and accuracy next to the float model.
A model with an unknown score must reproduce it too, within a relative
tolerance per format (``UNKNOWN_TOLERANCE``), every format failing beyond it.
int8's features carry the backbone's rounding, which does not shrink with
the score: its tolerance is a fraction of max(score, threshold), so that a
score near or below the threshold may move by a share of the threshold.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.decode import LABEL_BATCH_SIZE
from ..errors import ExportMismatch
from ..graph_contract import UNKNOWN_SCORE_NAME
from ..label.labeler import GraphLabeler
from ..models.model_file import model_size
from ..options import default

DEFAULT_EXPORT_CHECK_SAMPLES = default("export_check_samples")
TIE = 1e-5  # top-1 classes closer than this in the reference are a tie: either answer agrees
# How far (relative) a written file's unknown score may be from the reference's, by report name; float files
# (frozen graph, SavedModel, TFLite float) FLOAT_UNKNOWN_TOLERANCE: float32 against the float64 reference, through
# a whitening whose ridge allows a condition number near 1e3 (measured up to 8e-4 apart).
FLOAT_UNKNOWN_TOLERANCE = 0.01
# How far (relative) the features of two float32 engines running the same network may differ: a fine-tuned run's
# Keras top against its frozen graph (about 100 float32 ulps; on the random-weight MobileNetV3 test, whose features
# hardly vary, a tenth of it already covers every score). Through such a whitening this is most of a score.
ENGINE_FEATURE_ERROR = 1e-5
# int8: of max(score, threshold), see THRESHOLD_SCALED; the flowers' int8 files moved it by at most 0.28 of that
# (benchmarks/README.md, Exports), while a collapsed integer score is off by all of it
INT8_UNKNOWN_TOLERANCE = 0.5
UNKNOWN_TOLERANCE = {"TFLite float16": 0.05, "TFLite dynamic": 0.25, "TFLite int8": INT8_UNKNOWN_TOLERANCE}
# formats whose tolerance is a fraction of max(score, threshold) rather than of the score (see the docstring);
# int8 files with uint8 I/O are integer-only and carry no score (see tflite.py)
THRESHOLD_SCALED = {"TFLite int8"}


@dataclass
class CheckImages:
    """The images every export is checked on, with the reference model's answers."""
    paths: list[Path]
    pixels: np.ndarray  # uint8 [N, H, W, 3] at the model's input size
    reference: np.ndarray  # probabilities [N, C] from the in-memory model or the source graph
    truths: np.ndarray | None = None  # label indices, when the images are labelled
    reference_name: str = "the trained model"
    # [N, C]: the most each reference logit may be off (answers from float16 cached features); a class whose
    # logit could reach the top one's is a tie, as the model itself could have answered either.
    logit_error: np.ndarray | None = None
    unknown: np.ndarray | None = None  # [N] the reference's unknown scores; None: the model has no such output
    unknown_error: np.ndarray | None = None  # [N] the most each may be off (float16 cached features), as logit_error

    def reference_accuracy(self) -> float | None:
        return None if self.truths is None else float(np.mean(self.reference.argmax(axis=1) == self.truths))


@dataclass
class ExportCheck:
    """What checking one artifact found."""
    name: str  # e.g. "TFLite int8"
    path: Path
    exact: bool  # a float export: must agree on every image
    count: int
    agreement: float
    max_difference: float  # largest absolute probability difference from the reference
    accuracy: float | None
    reference_accuracy: float | None
    size: int
    reference_size: int | None
    reference_name: str
    unknown_difference: float | None = None  # the largest relative unknown score difference; None: no score

    def summary(self) -> str:
        """One line, e.g. ``TFLite int8: 97.8% agreement, accuracy 91.2% vs 92.0% float, 4.1 MB vs 16.9 MB``."""
        unknown = ("" if self.unknown_difference is None else
                   f", unknown score within {self.unknown_difference:.1e} (relative)")
        if self.exact:
            return (f"{self.name}: same top-1 as {self.reference_name} on all {self.count} check images "
                    f"(max probability difference {self.max_difference:.1e}{unknown}), {_size_text(self.size)}")
        accuracy = ("" if self.accuracy is None else
                    f", accuracy {self.accuracy * 100:.1f}% vs {self.reference_accuracy * 100:.1f}% float")
        size = _size_text(self.size) + ("" if self.reference_size is None else
                                        f" vs {_size_text(self.reference_size)}")
        return (f"{self.name}: {self.agreement * 100:.1f}% agreement on {self.count} check images{accuracy}{unknown}, "
                f"{size}")


def _size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def predict_export(path: str | os.PathLike, pixels: np.ndarray, trust_graph: bool = False) -> np.ndarray:
    """Probabilities from the written file, loaded with its sidecar exactly as ``label_image`` loads it."""
    return predict_export_with_unknown(path, pixels, trust_graph)[0]


def predict_export_with_unknown(path: str | os.PathLike, pixels: np.ndarray, trust_graph: bool = False
                                ) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Probabilities, unknown scores (None: no such output) and the threshold the file's sidecar promises."""
    labeler = GraphLabeler(path, trust_graph=trust_graph)
    normalization = (labeler.config.input_mean, labeler.config.input_std)
    batches = [labeler.model.predict_with_unknown(pixels[i:i + LABEL_BATCH_SIZE], normalization)
               for i in range(0, len(pixels), LABEL_BATCH_SIZE)]
    probabilities = np.concatenate([p for p, _ in batches] or [np.zeros((0, len(labeler.labels)), np.float32)])
    scores = np.concatenate([s for _, s in batches] or [np.zeros(0)]) if labeler.model.has_unknown_score else None
    return probabilities, scores, labeler.config.unknown_threshold


def check_unknown_scores(path: Path, name: str, images: CheckImages, scores: np.ndarray | None,
                         threshold: float | None = None) -> float:
    """The largest relative difference of the written file's unknown ``scores`` from the reference's.

    ``threshold`` (the file's sidecar's) is the least score a ``THRESHOLD_SCALED`` format's tolerance scales with.

    Raises:
        ExportMismatch: the file has no unknown score, or one is further off than its format allows.
    """
    if scores is None:
        raise ExportMismatch(f"{path} ({name}) has no {UNKNOWN_SCORE_NAME} output but {images.reference_name} "
                             f"has one; do not use this file")
    tolerance = UNKNOWN_TOLERANCE.get(name, FLOAT_UNKNOWN_TOLERANCE)
    difference = np.abs(scores.astype(np.float64) - images.unknown)
    scale = np.abs(images.unknown)
    if name in THRESHOLD_SCALED and threshold is not None:
        scale = np.maximum(scale, threshold)
    allowed = tolerance * scale + (0 if images.unknown_error is None else images.unknown_error)
    off = np.flatnonzero(difference > allowed)
    if len(off):
        of = "of max(score, threshold) " if name in THRESHOLD_SCALED and threshold is not None else ""
        raise ExportMismatch(f"{path} ({name}) gives unknown score {scores[off[0]]:.4g} on {images.paths[off[0]]}, "
                             f"{images.reference_name} {images.unknown[off[0]]:.4g} (at most {tolerance:.1%} {of}apart "
                             f"allowed); do not use this file")
    return float((difference / np.maximum(scale, 1e-12)).max(initial=0.0))


def agreeing(images: CheckImages, probabilities: np.ndarray) -> np.ndarray:
    """Per image, whether ``probabilities`` pick the reference's top-1 class, or one tied with it."""
    predicted, expected = probabilities.argmax(axis=1), images.reference.argmax(axis=1)
    rows = np.arange(len(predicted))
    tie = images.reference[rows, expected] - images.reference[rows, predicted] <= TIE
    if images.logit_error is not None:
        with np.errstate(divide="ignore"):  # a probability that underflowed to 0 is an infinite gap, not a tie
            gap = np.log(images.reference[rows, expected]) - np.log(images.reference[rows, predicted])
        tie |= gap <= images.logit_error[rows, expected] + images.logit_error[rows, predicted]
    return (predicted == expected) | tie


def check_export(path: str | os.PathLike, name: str, images: CheckImages, labels: Sequence[str], exact: bool,
                 reference_size: int | None = None, trust_graph: bool = False) -> ExportCheck:
    """Run the written ``path`` on ``images``; raise ``ExportMismatch`` if a float export disagrees.

    ``trust_graph`` as for the source: a backbone the user trusted past ``graph_check`` is in the export too.
    """
    path = Path(path)
    probabilities, scores, threshold = predict_export_with_unknown(path, images.pixels, trust_graph)
    if probabilities.shape != images.reference.shape:
        raise ExportMismatch(f"{path} ({name}) gives {probabilities.shape[-1]} outputs per image, "
                             f"{images.reference_name} {images.reference.shape[-1]}; do not use this file")
    predicted, expected = probabilities.argmax(axis=1), images.reference.argmax(axis=1)
    rows = np.arange(len(predicted))
    agrees = agreeing(images, probabilities)
    if exact and not agrees.all():
        first = int(np.flatnonzero(~agrees)[0])
        raise ExportMismatch(
            f"{path} ({name}) disagrees with the trained model on {images.paths[first]}: it says "
            f"{labels[predicted[first]]} ({probabilities[first, predicted[first]]:.3f}), {images.reference_name} says "
            f"{labels[expected[first]]} ({images.reference[first, expected[first]]:.3f}); do not use this file")
    accuracy = None if images.truths is None else float(np.mean(predicted == images.truths))
    # a file whose sidecar has no threshold was written without the score on purpose (uint8 I/O: see tflite.py)
    checked = images.unknown is not None and (threshold is not None or scores is not None)
    unknown = check_unknown_scores(path, name, images, scores, threshold) if checked else None
    return ExportCheck(name, path, exact, len(rows), float(agrees.mean()) if len(rows) else 1.0,
                       float(np.abs(probabilities - images.reference).max(initial=0.0)), accuracy,
                       images.reference_accuracy(), model_size(path), reference_size, images.reference_name, unknown)
