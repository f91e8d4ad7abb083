"""The views timm and torchvision train with: random-resized crop and colour jitter, in range and deterministic."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from retrain.cache.views import STRONG_VIEWS
from retrain.data.distortions import CROP_ASPECT_RANGE, Distortions, distort_image, jitter_factors, resized_crop_box
from retrain.errors import UserError

SIZE = 32
seeds = st.integers(0, 2**32 - 1)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@settings(max_examples=300, deadline=None)
@given(width=st.integers(100, 3000), height=st.integers(100, 3000), min_area=st.floats(0.05, 1), seed=seeds)
def test_a_crop_s_area_and_aspect_stay_in_range(width, height, min_area, seed):
    left, top, right, bottom = resized_crop_box(width, height, min_area, _rng(seed))
    crop_width, crop_height = right - left, bottom - top
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    # Sides are rounded to whole pixels: some real sides within half a pixel of them meet the ranges.
    assert (crop_width + 0.5) / (crop_height - 0.5) >= CROP_ASPECT_RANGE[0]
    assert (crop_width - 0.5) / (crop_height + 0.5) <= CROP_ASPECT_RANGE[1]
    centred = (left, top) == ((width - crop_width) // 2, (height - crop_height) // 2)
    fallback = centred and (crop_width == width or crop_height == height)  # after 10 draws that did not fit
    assert fallback or (crop_width + 0.5) * (crop_height + 0.5) >= min_area * width * height


def test_crops_spread_over_their_ranges_and_fall_back_to_the_centre():
    boxes = [resized_crop_box(1000, 1000, 0.08, _rng(seed)) for seed in range(400)]
    areas = [(r - x) * (b - y) / 1e6 for x, y, r, b in boxes]
    aspects = [math.log((r - x) / (b - y)) for x, y, r, b in boxes]
    assert min(areas) < 0.15 and max(areas) > 0.9
    assert min(aspects) < math.log(0.8) and max(aspects) > math.log(1.25)
    # A 10:1 panorama fits no crop of at least half its area with aspect up to 4/3: its centre, 4:3.
    assert resized_crop_box(1000, 100, 0.5, _rng(0)) == (433, 0, 566, 100)


@settings(max_examples=200, deadline=None)
@given(strength=st.floats(0, 1.5), seed=seeds)
def test_jitter_factors_stay_in_range_in_a_random_order(strength, seed):
    draw = jitter_factors(strength, _rng(seed))
    assert sorted(name for name, _ in draw) == ["brightness", "contrast", "saturation"]
    assert all(max(0, 1 - strength) - 1e-6 <= factor <= 1 + strength + 1e-6 for _, factor in draw)


def test_jitter_orders_vary():
    assert len({tuple(name for name, _ in jitter_factors(0.4, _rng(seed))) for seed in range(60)}) == 6


def _png(path, pixels: np.ndarray):
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_a_view_is_the_crop_the_flag_asks_for(tmp_path):
    """Red counts columns and green rows, so a view's span of each is the share of the image it shows."""
    height, width = 240, 320
    columns, rows = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    path = _png(tmp_path / "ramp.png", np.stack([columns, rows, np.zeros_like(rows)], -1).round())
    shares = []
    for seed in range(40):
        view = distort_image(path, SIZE, Distortions(random_resized_crop=0.25), _rng(seed), 10).astype(float)
        shares.append((np.ptp(view[..., 0]) + 8) / 255 * (np.ptp(view[..., 1]) + 8) / 255)  # + a resized pixel
    assert min(shares) >= 0.25 and max(shares) <= 1.2
    assert np.median(shares) < 0.8  # the whole image every time would be a flag ignored


def test_jitter_scales_a_grey_image_within_its_range(tmp_path):
    """On an even grey image contrast and saturation change nothing: what is left is the brightness factor."""
    path = _png(tmp_path / "grey.png", np.full((SIZE, SIZE, 3), 100))
    factors = [distort_image(path, SIZE, Distortions(color_jitter=0.4), _rng(seed), 10).mean() / 100
               for seed in range(40)]
    assert min(factors) >= 0.6 - 0.01 and max(factors) <= 1.4
    assert max(factors) - min(factors) > 0.4


def test_same_seed_same_view_and_poets_flags_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3))
    path = _png(tmp_path / "noise.png", pixels)
    first, again = (distort_image(path, SIZE, STRONG_VIEWS, _rng(7), 10) for _ in range(2))
    assert np.array_equal(first, again) and first.shape == (SIZE, SIZE, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, distort_image(path, SIZE, STRONG_VIEWS, _rng(8), 10))
    poets = Distortions(True, 10, 10, 10)
    assert np.array_equal(distort_image(path, SIZE, poets, _rng(7), 10),
                          distort_image(path, SIZE, Distortions(True, 10, 10, 10, 0.0, 0.0), _rng(7), 10))


def test_identity_of_poets_distortions_is_as_before():
    """Cached views are keyed (and seeded) by this text: views cached before the new options keep their keys."""
    assert Distortions(True, 10, 10, 10).identity == ("Distortions(flip_left_right=True, random_crop=10, "
                                                      "random_scale=10, random_brightness=10)")
    assert STRONG_VIEWS.identity.endswith("random_resized_crop=0.25, color_jitter=0.4)")
    assert Distortions(color_jitter=0.1).enabled and Distortions(random_resized_crop=0.5).enabled
    assert not Distortions().enabled


@pytest.mark.parametrize("kwargs, message", [
    ({"random_resized_crop": 1.5}, "^random_resized_crop must be a share of the image's area from 0"),
    ({"random_resized_crop": 0.3, "random_crop": 10}, "^random_resized_crop crops the image itself: give it without "
                                                      "random_crop and random_scale"),
    ({"color_jitter": -0.1}, "^color_jitter must be 0 \\(off\\) or more, got -0.1"),
])
def test_out_of_range_values_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        Distortions(**kwargs)
