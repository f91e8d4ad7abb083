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

import numpy as np

RIDGE = 1e-3  # relative to the covariance's mean variance, trace / D
UNKNOWN_QUANTILE = 0.95  # the share of validation images of the known classes that passes


@dataclass
class UnknownScore:
    """The Mahalanobis score: class means and the whitening of the shared covariance, in whitened space."""
    whitening: np.ndarray  # [D, D]: features @ whitening has the identity as its (ridged) within-class covariance
    means: np.ndarray  # [classes, D], whitened
    threshold: float = float("inf")  # scores above it are "none of these"; inf until ``with_threshold``

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The squared Mahalanobis distance of each row to the nearest class mean (``[N]``, float64)."""
        whitened = np.asarray(features, dtype=np.float64) @ self.whitening
        # |z - m|^2 = |z|^2 - 2 z.m + |m|^2, for all classes at once
        distances = ((whitened ** 2).sum(axis=1, keepdims=True) - 2 * whitened @ self.means.T
                     + (self.means ** 2).sum(axis=1))
        return np.maximum(distances.min(axis=1), 0.0)

    def is_unknown(self, features: np.ndarray) -> np.ndarray:
        """Whether each row's score is above the threshold (``[N]`` bool)."""
        return self.scores(features) > self.threshold


def fit_unknown_score(features: np.ndarray, labels: np.ndarray, ridge: float = RIDGE) -> UnknownScore:
    """Class means and the shared (pooled within-class) covariance of the training ``features``.

    Args:
        features: ``[N, D]`` training features, as the head sees them.
        labels: ``[N]`` their classes (0 .. classes-1, each present).
        ridge: added to the covariance's diagonal, as a fraction of its mean variance.

    Returns:
        The score, without a threshold (see ``with_threshold``).
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(axis=0) for c in classes])
    centred = features - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / len(features)
    covariance[np.diag_indices_from(covariance)] += ridge * np.trace(covariance) / len(covariance)
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
