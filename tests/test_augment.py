"""Augmented views through the cache: deterministic, cached once, resumable."""
from __future__ import annotations

import numpy as np
import pytest

import retrain.cache.bottlenecks as bottlenecks
from retrain.cache.store import BottleneckCache
from retrain.cache.views import (
    DEFAULT_AUGMENT_DISTORTIONS,
    DISTORTION_FLAG_COPIES,
    STRONG_VIEWS,
    Augmentation,
    augmentation_for,
    get_views,
)
from retrain.data.distortions import Distortions
from retrain.errors import UserError
from retrain.files import content_key
from tests.conftest import TINY_SIZE

DISTORTIONS = Distortions(flip_left_right=True, random_crop=20, random_scale=20, random_brightness=20)


def _views(paths, backbone, cache, augmentation, **kwargs):
    return get_views(paths, backbone, TINY_SIZE, cache, augmentation, batch_size=4, log=lambda _: None, **kwargs)


@pytest.fixture
def setup(image_dir, tiny_model_dir, tmp_path):
    from retrain.models.backbones import load_backbone
    from tests.conftest import tiny_spec
    backbone = load_backbone(tiny_spec(), tiny_model_dir)
    paths = sorted(image_dir.rglob("*.jpg"))[:6]
    return backbone, paths, lambda name="cache": BottleneckCache(tmp_path / name, backbone.spec.cache_id,
                                                                 backbone.feature_size)


@pytest.mark.parametrize("distortions", [DISTORTIONS, STRONG_VIEWS], ids=["poets", "strong"])
def test_views_are_deterministic_per_content_view_and_seed(image_dir, distortions):
    path = sorted(image_dir.rglob("*.jpg"))[0]
    key = content_key(path)
    augmentation = Augmentation(3, distortions, seed=1)
    assert augmentation.view_key(key, 0) == key  # the undistorted row is shared with validation and test
    assert len({augmentation.view_key(key, v) for v in range(4)}) == 4
    assert Augmentation(3, distortions, seed=2).view_key(key, 1) != augmentation.view_key(key, 1)
    first, again = (augmentation.load(path, TINY_SIZE, key, 1) for _ in range(2))
    assert np.array_equal(first, again) and first.shape == (TINY_SIZE, TINY_SIZE, 3)
    assert not np.array_equal(first, augmentation.load(path, TINY_SIZE, key, 2))
    moved = path.with_name("renamed.jpg")
    path.rename(moved)
    assert np.array_equal(first, augmentation.load(moved, TINY_SIZE, key, 1))  # content, not name


def test_negative_copies_is_a_user_error():
    with pytest.raises(UserError, match="^augment_copies must be 0 or more, got -1"):
        Augmentation(-1)


def test_distortion_flags_and_copies_combine():
    assert augmentation_for(2, Distortions(), None).distortions == DEFAULT_AUGMENT_DISTORTIONS
    assert augmentation_for(2, DISTORTIONS, 3) == Augmentation(2, DISTORTIONS, 3)
    assert augmentation_for(0, DISTORTIONS, 3) == Augmentation(DISTORTION_FLAG_COPIES, DISTORTIONS, 3)
    assert augmentation_for(0, Distortions(), 3).copies == 0


def test_views_are_cached_once_and_reused(setup):
    backbone, paths, make_cache = setup
    augmentation = Augmentation(2, DISTORTIONS, seed=0)
    cache = make_cache()
    first = _views(paths, backbone, cache, augmentation)
    assert first.computed == 12 and sorted(first.image.tolist()) == sorted(list(range(6)) * 2)
    second = _views(paths, backbone, cache, augmentation)
    assert second.computed == 0
    np.testing.assert_array_equal(first.features, second.features)
    assert not np.allclose(first.features[0], first.features[1])  # two views of one image differ


def test_a_run_killed_while_caching_views_resumes_to_the_same_rows(setup, monkeypatch):
    backbone, paths, make_cache = setup
    augmentation = Augmentation(2, DISTORTIONS, seed=0)
    fresh = _views(paths, backbone, make_cache("fresh"), augmentation)
    monkeypatch.setattr(bottlenecks, "FLUSH_EVERY_IMAGES", 4)
    calls = [0]

    def dies_after_two_batches(images):
        calls[0] += 1
        if calls[0] > 2:
            raise KeyboardInterrupt  # what a kill mid-caching leaves: the flushed shards only
        return backbone(images)

    cache = make_cache("killed")
    with pytest.raises(KeyboardInterrupt):
        _views(paths, dies_after_two_batches, cache, augmentation)
    assert cache.shard_paths()
    resumed = _views(paths, backbone, cache, augmentation)
    assert 0 < resumed.computed < 12
    order = lambda views: np.lexsort((views.view, views.image))  # noqa: E731
    np.testing.assert_array_equal(np.asarray(fresh.features)[order(fresh)],
                                  np.asarray(resumed.features)[order(resumed)])
