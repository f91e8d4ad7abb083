"""Small classes get a validation and a test image; the hash split is otherwise kept."""
from hypothesis import given
from hypothesis import strategies as st

from retrain.data.images import (
    MIN_PHOTOS_PER_CLASS_FOR_HOLDOUT,
    SPLITS,
    ensure_every_split,
    hash_percentage,
    split_at,
    split_images,
    split_summary,
)
from tests.conftest import make_image


@given(st.dictionaries(st.floats(0, 100), st.sampled_from(SPLITS), min_size=1, max_size=8))
def test_a_class_of_three_photos_gets_every_split_by_moving_one_photo_per_empty_split(photos):
    splits = ensure_every_split(photos, SPLITS)
    if len(photos) < MIN_PHOTOS_PER_CLASS_FOR_HOLDOUT:
        assert splits == photos
        return
    assert set(splits.values()) == set(SPLITS)
    moved = [key for key in photos if splits[key] != photos[key]]
    assert len(moved) == len(set(SPLITS) - set(photos.values()))


def test_the_lowest_hash_moves_and_a_disabled_split_gets_none():
    photos = {70.0: "train", 30.0: "train", 90.0: "train"}
    assert ensure_every_split(photos, SPLITS) == {70.0: "test", 30.0: "validation", 90.0: "train"}
    assert ensure_every_split(photos, ("train", "validation")) == {70.0: "train", 30.0: "validation", 90.0: "train"}


def test_small_classes_are_held_out_and_listed_in_the_summary(tmp_path):
    for label, count in (("big", 40), ("small", 3), ("tiny", 2)):
        for i in range(count):
            make_image(tmp_path / label / f"{label}_{i}.jpg", (100, 100, 100), seed=i)
    records = split_images(tmp_path, 10, 10)
    by_class = {label: sorted(r.split for r in records if r.label == label) for label in ("small", "tiny")}
    assert by_class["small"] == ["test", "train", "validation"]
    assert by_class["tiny"] == sorted(split_at(hash_percentage(f"tiny_{i}.jpg"), 10, 10) for i in range(2))
    summary = split_summary(records)
    assert summary.startswith("Found 45 images in 3 classes: ")
    assert "small classes (train/validation/test): " in summary
    assert "'small' 1/1/1" in summary and "'tiny' " in summary
