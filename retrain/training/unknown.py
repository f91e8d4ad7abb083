"""'None of these': how far an image's features lie from every class the head was trained on (issue 22).

A softmax must spread all its confidence over the known classes, so a photo of something else often still
scores above 0.9. The score here looks at the features the head sees instead: the squared Mahalanobis distance
to the nearest class mean, with one covariance shared by the classes (Lee et al. 2018), fitted on the training
features scaled to unit length (their direction, not their length, tells what a photo shows: on a Caltech-101 known
side this lifts the AUROC against other photos from 0.89 to 0.98, benchmarks/README.md). The threshold is the
``quantile`` of held-out scores, so that share of new images of the known classes passes: the validation images'
scores and the training images', each from a fit without it (leave-one-out, in closed form from the one fit:
``fit_leave_one_out``).

The covariance of 1024-d features from a few hundred photos is singular; a ridge of ``RIDGE`` times its mean
variance (trace / D) is added to its diagonal, which keeps the directions the training photos hardly vary in from
dominating the distance. A large ridge (3: the covariance is a quarter its own, three quarters the mean variance in
every direction) came within 0.002 of the best AUROC on every unknown set of both the flowers and a Caltech-101
known side (ridges from 1e-3 to 1e4 measured); 1e-3 was up to 0.05 worse on Caltech-101.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..cache.rows import SCORE_ROWS, FeatureRows
from ..errors import Log, option_value

RIDGE = 3.0  # relative to the covariance's mean variance, trace / D
SQUARED_LENGTH_FLOOR = 1e-24  # a feature vector shorter than 1e-12 is not scaled up to unit length
VARIANCE_FLOOR = 1e-6  # the least mean variance, relative to the mean squared class-mean feature
UNKNOWN_QUANTILE = 0.95  # the share of held-out images of the known classes that passes


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

        The unit vector ``u = f / |f|`` moves in each component by at most ``(|e_j| + |u_j| |e|) / (|f| - |e|)``
        (2, the most a unit vector's component can, once ``|e|`` reaches ``|f|``); the whitened vector then
        by at most ``b = | |e_u| @ |whitening| |`` in length, and the distance to the nearest mean,
        ``sqrt(score)``, by at most ``b``: so the score by ``2 b sqrt(score) + b^2``.
        """
        features, error = features.astype(np.float64), np.abs(feature_error.astype(np.float64))
        length, error_length = (np.linalg.norm(x, axis=1, keepdims=True) for x in (features, error))
        margin = np.maximum(length - error_length, np.finfo(np.float64).tiny)
        unit_error = np.minimum((error + np.abs(unit_rows(features)) * error_length) / margin, 2.0)
        moved = np.linalg.norm(unit_error @ np.abs(self.whitening), axis=1)
        return 2 * moved * np.sqrt(self.scores(features)) + moved ** 2

    def graph_scores(self, features, name: str | None = None):
        """The scores as TensorFlow ops on ``features`` ``[N, D]``, whitening and means as constants (``[N]``).

        The features are scaled to unit length first, as ``unit_rows`` does.

        ``|f W - m W|^2`` is ``(f - m)^T P (f - m)`` with the precision matrix ``P = W W^T``; the difference is
        taken before squaring, so float32 loses nothing to cancellation.
        """
        import tensorflow as tf
        unit = features * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(features), axis=1, keepdims=True),
                                                   SQUARED_LENGTH_FLOOR))
        whitened = tf.matmul(unit, tf.constant(self.whitening.astype(np.float32), name="unknown_whitening"))
        means = tf.constant(self.means.astype(np.float32), name="unknown_means")
        squared = tf.reduce_sum(tf.square(tf.expand_dims(whitened, 1) - means), axis=2)
        return tf.reduce_min(squared, axis=1, name=name)

    def is_unknown(self, features: np.ndarray) -> np.ndarray:
        """Whether each row's score is above the threshold (``[N]`` bool)."""
        return self.scores(features) > self.threshold


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a row of length below ``sqrt(SQUARED_LENGTH_FLOOR)``: divided by that)."""
    return features / np.sqrt(np.maximum((features ** 2).sum(axis=1, keepdims=True), SQUARED_LENGTH_FLOOR))


def _row_chunks(features: np.ndarray | FeatureRows) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, unit rows as float64)``: an in-memory array at once, streamed rows a chunk at a time in disk
    order. The score is fitted and measured on the features' directions (``unit_rows``), not their lengths."""
    if isinstance(features, FeatureRows):
        for positions in features.chunks(SCORE_ROWS):
            yield positions, unit_rows(features.read(positions).astype(np.float64))
    else:
        yield np.arange(len(features)), unit_rows(np.asarray(features, dtype=np.float64))


@dataclass
class _Fit:
    """A fitted score before whitening: what the leave-one-out scores are derived from as well."""
    counts: np.ndarray  # [classes] training images per class
    means: np.ndarray  # [classes, D] class means of the features
    eigenvalues: np.ndarray  # [D] of the ridged covariance, each at least ``ridge_variance``
    eigenvectors: np.ndarray  # [D, D] its eigenvectors, one per column
    ridge_variance: float  # what the ridge added to the diagonal

    def score(self, eigenvalues: np.ndarray | None = None) -> UnknownScore:
        """The score that whitens by ``eigenvalues`` (default: the fit's own) in the fit's eigenvectors."""
        whitening = self.eigenvectors / np.sqrt(self.eigenvalues if eigenvalues is None else eigenvalues)
        return UnknownScore(whitening, self.means @ whitening)


def _fit(features: np.ndarray | FeatureRows, labels: np.ndarray, ridge: float) -> _Fit:
    """Class means and the ridged shared covariance's eigendecomposition; two passes over the rows."""
    classes = int(labels.max()) + 1
    sums = np.zeros((classes, features.shape[1]))
    for positions, rows in _row_chunks(features):
        np.add.at(sums, labels[positions], rows)
    counts = np.bincount(labels, minlength=classes)
    means = sums / counts[:, None]
    covariance = np.zeros((features.shape[1], features.shape[1]))
    for positions, rows in _row_chunks(features):
        centred = rows - means[labels[positions]]
        covariance += centred.T @ centred
    covariance /= len(labels)
    # Features that (nearly) never vary within a class, as from a backbone with random or dead weights, would
    # make the ridge vanish and the whitening explode: the variance it is relative to has a floor at a
    # VARIANCE_FLOOR share of the features' own energy (real features vary far more), or 1 when they are all 0.
    energy = float(np.mean(means ** 2))
    ridge_variance = max(ridge * np.trace(covariance) / len(covariance), ridge * VARIANCE_FLOOR * energy) or ridge
    covariance[np.diag_indices_from(covariance)] += ridge_variance
    # The ridge is at least ridge / D of the largest eigenvalue (at most the trace), far above eigh's round-off:
    # every eigenvalue stays positive.
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    return _Fit(counts, means, eigenvalues, eigenvectors, ridge_variance)


def _class_indices(labels: np.ndarray) -> np.ndarray:
    """``labels`` as 0 .. classes-1 in the order of their values."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def fit_unknown_score(features: np.ndarray | FeatureRows, labels: np.ndarray, ridge: float = RIDGE) -> UnknownScore:
    """Class means and the shared (pooled within-class) covariance of the training ``features``.

    Args:
        features: ``[N, D]`` training features, as the head sees them: in memory, or streamed from the cache
            (beyond ``--memory_budget_gb``), read a chunk at a time.
        labels: ``[N]`` their classes (any values; each value present is a class).
        ridge: added to the covariance's diagonal, as a fraction of its mean variance.

    Returns:
        The score, without a threshold (see ``with_threshold``).
    """
    return _fit(features, _class_indices(labels), ridge).score()


def fit_leave_one_out(features: np.ndarray | FeatureRows, labels: np.ndarray,
                      ridge: float = RIDGE) -> tuple[UnknownScore, np.ndarray]:
    """The score fitted on all training ``features``, and each one's score from a fit without it.

    A fit scores the images it has seen lower than new images of their classes, the more so as the features
    outnumber the images (1024 features, a few hundred photos: only the ridge stands for the directions the
    photos never vary in). Left out of the fit, each training image is a new one; a fit on ``k - 1`` folds
    would be fitted on fewer images than the full one and score new images markedly higher (benchmarks/README.md).
    Leaving out one image moves its class mean by ``r / (n - 1)`` and takes ``n / (n - 1) r r^T`` from the
    scatter (``r``: the image's residual from its class mean, ``n``: its class's images), so each left-out fit
    is the full fit's eigenvectors plus a Sherman-Morrison update: one ``D x D`` eigendecomposition in all. The
    ridge is the full fit's (leaving out one of ``N`` images moves it by about ``1 / N``). An image that is its
    class's only one is left out: without it there is no mean to measure it from.

    Args:
        features: ``[N, D]`` training features, in memory or streamed (each row is read three times).
        labels: ``[N]`` their classes (any values; each value present is a class).
        ridge: as for ``fit_unknown_score``.

    Returns:
        The full fit, without a threshold, and ``[M]`` leave-one-out scores (``M <= N``) in row order.
    """
    indices = _class_indices(labels)
    fit = _fit(features, indices, ridge)
    total = len(indices)
    # without one image the covariance is the scatter over N - 1 images: the same eigenvectors, and each
    # eigenvalue's scatter part scaled by N / (N - 1)
    left_out = fit.score((fit.eigenvalues - fit.ridge_variance) * total / max(total - 1, 1) + fit.ridge_variance)
    scored = fit.counts[indices] > 1
    scores = np.empty(total)
    for positions, rows in _row_chunks(features):
        kept = scored[positions]
        positions, classes = positions[kept], indices[positions[kept]]
        count = fit.counts[classes].astype(np.float64)
        whitened = rows[kept] @ left_out.whitening
        residual = whitened - left_out.means[classes]  # r, whitened as every left-out fit is before its downdate
        grows = count / (count - 1)  # the residual from the left-out class mean is grows * r
        downdate = grows / (total - 1)  # the covariance loses downdate * r r^T
        residual_norm = (residual ** 2).sum(axis=1)
        # 1 - downdate |r|^2 > 0 because the downdated scatter is positive semi-definite; the floor is for round-off
        remaining = np.maximum(1 - downdate * residual_norm, np.finfo(np.float64).eps)
        # to every class mean m: |z - m|^2 from the full covariance, plus the Sherman-Morrison term of the downdate
        # (with (z - m).r); expanded as in UnknownScore._scores_in_memory, so no [rows, classes, D] array
        to_means = whitened @ left_out.means.T
        squared_means = (left_out.means ** 2).sum(axis=1)
        along = (whitened * residual).sum(axis=1, keepdims=True) - residual @ left_out.means.T
        distances = ((whitened ** 2).sum(axis=1, keepdims=True) - 2 * to_means + squared_means
                     + downdate[:, None] * along ** 2 / remaining[:, None])
        distances[np.arange(len(classes)), classes] = grows ** 2 * residual_norm / remaining  # its own class
        scores[positions] = np.maximum(distances.min(axis=1), 0.0)
    return fit.score(), scores[scored]


def with_threshold(score: UnknownScore, held_out_scores: np.ndarray,
                   quantile: float = UNKNOWN_QUANTILE) -> UnknownScore:
    """``score`` with the threshold that ``quantile`` of ``held_out_scores`` do not exceed.

    Args:
        score: from ``fit_unknown_score`` or ``fit_leave_one_out``.
        held_out_scores: scores of images of the known classes that the score was not fitted on.
        quantile: the share of them that should pass, from 0 to 1.

    Returns:
        A copy of ``score`` with its threshold set.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be above 0 and at most 1, got {quantile}")
    return UnknownScore(score.whitening, score.means, float(np.quantile(held_out_scores, quantile)))


def fit_unknown_threshold(train_features: np.ndarray | FeatureRows, train_labels: np.ndarray,
                          validation_features: np.ndarray, quantile: float, log: Log) -> UnknownScore | None:
    """The unknown score fitted on the training features, its threshold on held-out scores, and one log line.

    The held-out scores are the training images', each left out of the fit (``fit_leave_one_out``), and the
    validation images': the quantile of a few dozen validation scores alone is too noisy to pass the share it
    promises (72 validation flowers: 13.8% of the test flowers flagged at 0.95, benchmarks/README.md).

    Args:
        train_features: ``[N, D]`` the training images' features, as the final head sees them.
        train_labels: ``[N]`` their classes.
        validation_features: ``[M, D]`` the validation images' features, likewise.
        quantile: the share of held-out images that should pass (``--unknown_quantile``); 0: no score.
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
    score, left_out = fit_leave_one_out(train_features, train_labels)
    score = with_threshold(score, np.concatenate([left_out, score.scores(validation_features)]), quantile)
    log(f"Unknown score: threshold {score.threshold:.1f} passes {quantile:.0%} of {len(left_out)} training images "
        f"(each scored by a fit without it) and {len(validation_features)} validation images; above it an image is "
        f"none of the labels")
    return score
