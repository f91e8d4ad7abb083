"""The 'none of these' score (Mahalanobis distance to the nearest class mean) and AUROC."""
import numpy as np
import pytest

import retrain.training.unknown as unknown
from retrain.cache.store import BottleneckCache
from retrain.metrics import auroc
from retrain.training.unknown import fit_leave_one_out, fit_unknown_score, fit_unknown_threshold, with_threshold


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
    score = fit_unknown_score(train, train_labels)
    score = with_threshold(score, score.scores(validation), 0.95)
    assert np.mean(score.is_unknown(validation)) == pytest.approx(0.05, abs=0.005)
    assert np.mean(score.is_unknown(held_out)) < 0.12
    # other things: the same spread, about the mean of the classes, in the directions the classes hardly vary in
    others = centres.mean(axis=0) + rng.normal(0, 1, (400, dimensions)) * scale[::-1]
    assert auroc(score.scores(held_out), score.scores(others)) > 0.95
    assert np.mean(score.is_unknown(others)) > 0.8
    # the score sees the features' directions, not their lengths
    np.testing.assert_allclose(score.scores(3 * held_out), score.scores(held_out), rtol=1e-9)


def test_quantile_must_be_a_share():
    rng = np.random.default_rng(1)
    score = fit_unknown_score(rng.normal(size=(20, 4)), np.arange(20) % 2)
    with pytest.raises(ValueError):
        with_threshold(score, score.scores(rng.normal(size=(5, 4))), 0)


@pytest.mark.parametrize("spread", [0.0, 1e-30])
def test_features_that_never_vary_within_a_class_still_give_finite_scores(spread):
    # a random-weight backbone can map every photo of a class to one vector: no variance to whiten by
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(2, 8))
    labels = np.arange(40) % 2
    train = centres[labels] + spread * rng.normal(size=(40, 8))
    score = fit_unknown_score(train, labels)
    score = with_threshold(score, score.scores(train[:10]), 0.95)
    assert np.isfinite(score.whitening).all() and np.isfinite(score.threshold)
    far = score.scores(centres + 5.0)
    assert score.scores(centres).max() < 1e-9 * far.min()  # each class mean is its own nearest mean
    assert score.is_unknown(centres + 5.0).all()
    assert np.isfinite(fit_unknown_score(np.zeros((4, 3)), np.arange(4) % 2).whitening).all()  # nothing but zeros


def classes_with_unequal_spread(rng, dimensions=16, classes=4):
    """A sampler of ``(features, labels)`` of a few classes whose features vary unequally (what whitening undoes)."""
    centres = rng.normal(0, 3, (classes, dimensions))
    scale = rng.uniform(0.2, 2, dimensions)

    def draw(count):
        labels = rng.integers(0, classes, count)
        return centres[labels] + rng.normal(0, 1, (count, dimensions)) * scale, labels
    return draw


def test_the_threshold_passes_the_quantile_of_new_images_though_the_validation_set_is_small():
    # 20 validation images: the 95th percentile of their scores alone is about their highest one, and from one
    # draw to the next it passes anywhere from ~85% to ~100% of new images; with the training images scored
    # out of fold, 620 scores set it
    misses = []
    for seed in range(8):
        draw = classes_with_unequal_spread(np.random.default_rng(seed))
        (train, labels), (validation, _), (new, _) = draw(600), draw(20), draw(4000)
        score = fit_unknown_threshold(train, labels, validation, 0.95, log=lambda message: None)
        misses.append(abs(np.mean(score.is_unknown(new)) - 0.05))
    assert np.mean(misses) < 0.012 and max(misses) < 0.03


def test_streamed_training_rows_give_the_in_memory_threshold(tmp_path, monkeypatch):
    draw = classes_with_unequal_spread(np.random.default_rng(3), dimensions=8)
    features, labels = draw(300)
    cache = BottleneckCache(tmp_path / "bn", "synthetic", 8)
    keys = [f"{i:040d}" for i in range(300)]
    for start, stop in ((0, 120), (120, 300)):  # two shards
        cache.write_shard(keys[start:stop], features[start:stop])
    order = np.random.default_rng(4).permutation(300)  # training rows in another order than on disk
    loaded = cache.load()
    rows = loaded.rows(loaded.find(np.array([keys[i].encode("ascii") for i in order], dtype="S40")))
    stored = rows.read()  # float16, as the cache holds them
    validation = draw(30)[0]
    monkeypatch.setattr(unknown, "SCORE_ROWS", 16)  # many chunks per pass
    streamed = fit_unknown_threshold(rows, labels[order], validation, 0.95, log=lambda message: None)
    in_memory = fit_unknown_threshold(stored, labels[order], validation, 0.95, log=lambda message: None)
    assert streamed.threshold == pytest.approx(in_memory.threshold, rel=1e-9)
    np.testing.assert_allclose(streamed.whitening, in_memory.whitening, rtol=1e-9, atol=1e-12)


def test_leave_one_out_scores_are_those_of_a_fit_without_the_image():
    draw = classes_with_unequal_spread(np.random.default_rng(5), dimensions=12)
    features, labels = draw(60)
    labels[0] = 9  # a class of one image: without it there is no mean to measure it from
    full, left_out = fit_leave_one_out(features, labels)
    assert len(left_out) == 59
    np.testing.assert_array_equal(fit_leave_one_out(features, labels)[1], left_out)  # deterministic
    np.testing.assert_allclose(full.whitening, fit_unknown_score(features, labels).whitening)
    features = unknown.unit_rows(features)  # what the score is fitted on
    ridge_variance = unknown._fit(features, unknown._class_indices(labels), unknown.RIDGE).ridge_variance
    for row in (1, 2, 30, 59):  # refitted without the row, with the full fit's ridge
        kept = np.arange(60) != row
        means = np.stack([features[kept & (labels == c)].mean(axis=0) for c in np.unique(labels[kept])])
        centred = features[kept] - means[np.searchsorted(np.unique(labels[kept]), labels[kept])]
        precision = np.linalg.inv(centred.T @ centred / 59 + ridge_variance * np.eye(12))
        offsets = features[row] - means
        assert left_out[row - 1] == pytest.approx(np.einsum("cd,de,ce->c", offsets, precision, offsets).min(),
                                                  rel=1e-9)
