"""'None of these': how far an image's features lie from every class the head was trained on (issue 22).

A softmax must spread all its confidence over the known classes, so a photo of something else often still
scores above 0.9. The score here looks at the features the head sees instead: the squared Mahalanobis distance
to the nearest class mean, with one covariance shared by the classes (Lee et al. 2018), fitted on the training
features. The threshold is the ``quantile`` of the validation images' scores, so that share of images of the
known classes passes.

The covariance of 1024-d features from a few hundred photos is singular; a ridge of ``RIDGE`` times its mean
variance (trace / D) is added to its diagonal, which keeps the directions the training photos never vary in from
dominating the distance while leaving the well-estimated directions nearly untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..cache.rows import SCORE_ROWS, FeatureRows
from ..errors import Log, option_value

RIDGE = 1e-3  # relative to the covariance's mean variance, trace / D
VARIANCE_FLOOR = 1e-6  # the least mean variance, relative to the mean squared class-mean feature
UNKNOWN_QUANTILE = 0.95  # the share of validation images of the known classes that passes


@dataclass
class UnknownScore:
    """The Mahalanobis score: class means and the whitening of the shared covariance, in whitened space."""
    whitening: np.ndarray  # [D, D]: features @ whitening has the identity as its (ridged) within-class covariance
    means: np.ndarray  # [classes, D], whitened
    threshold: float = float("inf")  # scores above it are "none of these"; inf until ``with_threshold``

    def scores(self, features: np.ndarray | FeatureRows) -> np.ndarray:
        """The squared Mahalanobis distance of each row to the nearest class mean (``[N]``, float64).

        Streamed rows (``FeatureRows``) are read and scored a chunk at a time.
        """
        out = np.empty(len(features))
        for positions, rows in _row_chunks(features):
            out[positions] = self._scores_in_memory(rows)
        return out

    def _scores_in_memory(self, features: np.ndarray) -> np.ndarray:
        whitened = features @ self.whitening
        # |z - m|^2 = |z|^2 - 2 z.m + |m|^2, for all classes at once
        distances = ((whitened ** 2).sum(axis=1, keepdims=True) - 2 * whitened @ self.means.T
                     + (self.means ** 2).sum(axis=1))
        return np.maximum(distances.min(axis=1), 0.0)

    def score_error(self, features: np.ndarray, feature_error: np.ndarray) -> np.ndarray:
        """The most each row's score can move when each feature may be off by ``feature_error`` (``[N]``).

        The whitened vector moves by at most ``b = | |e| @ |whitening| |`` in length, and the distance to the
        nearest mean, ``sqrt(score)``, by at most ``b``: so the score by ``2 b sqrt(score) + b^2``.
        """
        moved = np.linalg.norm(np.abs(feature_error.astype(np.float64)) @ np.abs(self.whitening), axis=1)
        return 2 * moved * np.sqrt(self.scores(features)) + moved ** 2

    def graph_scores(self, features, name: str | None = None):
        """The scores as TensorFlow ops on ``features`` ``[N, D]``, whitening and means as constants (``[N]``).

        ``|f W - m W|^2`` is ``(f - m)^T P (f - m)`` with the precision matrix ``P = W W^T``; the difference is
        taken before squaring, so float32 loses nothing to cancellation.
        """
        import tensorflow as tf
        whitened = tf.matmul(features, tf.constant(self.whitening.astype(np.float32), name="unknown_whitening"))
        means = tf.constant(self.means.astype(np.float32), name="unknown_means")
        squared = tf.reduce_sum(tf.square(tf.expand_dims(whitened, 1) - means), axis=2)
        return tf.reduce_min(squared, axis=1, name=name)

    def is_unknown(self, features: np.ndarray) -> np.ndarray:
        """Whether each row's score is above the threshold (``[N]`` bool)."""
        return self.scores(features) > self.threshold


def _row_chunks(features: np.ndarray | FeatureRows) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, rows as float64)``: an in-memory array at once, streamed rows a chunk at a time in disk order."""
    if isinstance(features, FeatureRows):
        for positions in features.chunks(SCORE_ROWS):
            yield positions, features.read(positions).astype(np.float64)
    else:
        yield np.arange(len(features)), np.asarray(features, dtype=np.float64)


def fit_unknown_score(features: np.ndarray | FeatureRows, labels: np.ndarray, ridge: float = RIDGE) -> UnknownScore:
    """Class means and the shared (pooled within-class) covariance of the training ``features``.

    Args:
        features: ``[N, D]`` training features, as the head sees them: in memory, or streamed from the cache
            (beyond ``--memory_budget_gb``), read a chunk at a time.
        labels: ``[N]`` their classes (0 .. classes-1, each present).
        ridge: added to the covariance's diagonal, as a fraction of its mean variance.

    Returns:
        The score, without a threshold (see ``with_threshold``).
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    sums = np.zeros((len(classes), features.shape[1]))
    for positions, rows in _row_chunks(features):
        np.add.at(sums, np.searchsorted(classes, labels[positions]), rows)
    means = sums / np.bincount(np.searchsorted(classes, labels), minlength=len(classes))[:, None]
    covariance = np.zeros((features.shape[1], features.shape[1]))
    for positions, rows in _row_chunks(features):
        centred = rows - means[np.searchsorted(classes, labels[positions])]
        covariance += centred.T @ centred
    covariance /= len(labels)
    # Features that (nearly) never vary within a class, as from a backbone with random or dead weights, would
    # make the ridge vanish and the whitening explode: the variance it is relative to has a floor at a
    # VARIANCE_FLOOR share of the features' own energy (real features vary far more), or 1 when they are all 0.
    energy = float(np.mean(means ** 2))
    ridge_variance = max(ridge * np.trace(covariance) / len(covariance), ridge * VARIANCE_FLOOR * energy) or ridge
    covariance[np.diag_indices_from(covariance)] += ridge_variance
    # The ridge is at least 1e-3 / D of the largest eigenvalue (at most the trace), far above eigh's round-off:
    # every eigenvalue stays positive.
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    whitening = eigenvectors / np.sqrt(eigenvalues)
    return UnknownScore(whitening, means @ whitening)


def with_threshold(score: UnknownScore, validation_features: np.ndarray,
                   quantile: float = UNKNOWN_QUANTILE) -> UnknownScore:
    """``score`` with the threshold that ``quantile`` of the validation images' scores do not exceed.

    Args:
        score: from ``fit_unknown_score``.
        validation_features: ``[N, D]`` images of the known classes the score was not fitted on.
        quantile: the share of them that should pass, from 0 to 1.

    Returns:
        A copy of ``score`` with its threshold set.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be above 0 and at most 1, got {quantile}")
    threshold = float(np.quantile(score.scores(validation_features), quantile))
    return UnknownScore(score.whitening, score.means, threshold)


def fit_unknown_threshold(train_features: np.ndarray, train_labels: np.ndarray, validation_features: np.ndarray,
                          quantile: float, log: Log) -> UnknownScore | None:
    """The unknown score fitted on the training features, its threshold on the validation ones, and one log line.

    Args:
        train_features: ``[N, D]`` the training images' features, as the final head sees them.
        train_labels: ``[N]`` their classes.
        validation_features: ``[M, D]`` the validation images' features, likewise.
        quantile: the share of validation images that should pass (``--unknown_quantile``); 0: no score.
        log: where the threshold is reported.

    Returns:
        The score with its threshold, or None when ``quantile`` is 0 or there are no validation images.
    """
    if not quantile:
        return None
    if not len(validation_features):
        log(f"No validation images: no unknown score ({option_value('unknown_quantile', str(quantile))} sets its "
            f"threshold on them)")
        return None
    score = with_threshold(fit_unknown_score(train_features, train_labels), validation_features, quantile)
    flagged = float(np.mean(score.is_unknown(train_features)))
    log(f"Unknown score: threshold {score.threshold:.1f} passes {quantile:.0%} of validation images; fitted on "
        f"{len(train_labels)} training images ({flagged:.1%} of them flagged); above it an image is none of the "
        f"labels")
    return score
