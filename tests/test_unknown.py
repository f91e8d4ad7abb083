"""The 'none of these' score (Mahalanobis distance to the nearest class mean) and AUROC."""
import numpy as np
import pytest

from retrain.metrics import auroc
from retrain.training.unknown import fit_unknown_score, with_threshold


def test_auroc_counts_pairs_ties_half():
    assert auroc([1, 2], [3, 4]) == 1.0
    assert auroc([3, 4], [1, 2]) == 0.0
    assert auroc([1, 3], [2]) == 0.5
    assert auroc([1, 1], [1]) == 0.5
    assert auroc([0, 1, 1], [1, 2]) == pytest.approx((1 + 0.5 + 0.5 + 1 + 1 + 1) / 6)


def test_images_far_from_every_class_score_high_and_the_threshold_passes_the_quantile():
    rng = np.random.default_rng(0)
    dimensions, classes = 64, 3
    centres = rng.normal(0, 3, (classes, dimensions))
    scale = rng.uniform(0.2, 2, dimensions)  # unequal variances: what the shared covariance whitens

    def known(count):
        labels = rng.integers(0, classes, count)
        return centres[labels] + rng.normal(0, 1, (count, dimensions)) * scale, labels

    train, train_labels = known(600)
    validation, _ = known(400)
    held_out, _ = known(400)
    score = with_threshold(fit_unknown_score(train, train_labels), validation, 0.95)
    assert np.mean(score.is_unknown(validation)) == pytest.approx(0.05, abs=0.005)
    assert np.mean(score.is_unknown(held_out)) < 0.12
    # other things: the same spread, about the mean of the classes, in the directions the classes hardly vary in
    others = centres.mean(axis=0) + rng.normal(0, 1, (400, dimensions)) * scale[::-1]
    assert auroc(score.scores(held_out), score.scores(others)) > 0.95
    assert np.mean(score.is_unknown(others)) > 0.8
    # the score is the distance in whitened space: a training class mean scores (near) 0
    assert score.scores(train[train_labels == 0].mean(axis=0, keepdims=True))[0] < 1e-6 * dimensions


def test_quantile_must_be_a_share():
    rng = np.random.default_rng(1)
    score = fit_unknown_score(rng.normal(size=(20, 4)), np.arange(20) % 2)
    with pytest.raises(ValueError):
        with_threshold(score, rng.normal(size=(5, 4)), 0)


@pytest.mark.parametrize("spread", [0.0, 1e-30])
def test_features_that_never_vary_within_a_class_still_give_finite_scores(spread):
    # a random-weight backbone can map every photo of a class to one vector: no variance to whiten by
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(2, 8))
    labels = np.arange(40) % 2
    train = centres[labels] + spread * rng.normal(size=(40, 8))
    score = with_threshold(fit_unknown_score(train, labels), train[:10], 0.95)
    assert np.isfinite(score.whitening).all() and np.isfinite(score.threshold)
    far = score.scores(centres + 5.0)
    assert score.scores(centres).max() < 1e-9 * far.min()  # each class mean is its own nearest mean
    assert score.is_unknown(centres + 5.0).all()
    assert np.isfinite(fit_unknown_score(np.zeros((4, 3)), np.arange(4) % 2).whitening).all()  # nothing but zeros
