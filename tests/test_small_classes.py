"""Small classes get a validation and a test image; the hash split is otherwise kept."""
from hypothesis import given, strategies as st

from retrain.small_classes import MIN_PHOTOS_FOR_HOLDOUT, ensure_holdout

SPLITS = ("train", "validation", "test")
HELD_OUT = ("validation", "test")
REQUIRED = ("train", *HELD_OUT)


@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from(SPLITS)), min_size=1, max_size=8))
def test_every_class_of_three_photos_gets_every_split_moving_one_photo_per_empty_split(photos):
    groups = {f"photo_{i}": photo for i, photo in enumerate(photos)}
    splits = ensure_holdout(groups, REQUIRED)
    if len(photos) < MIN_PHOTOS_FOR_HOLDOUT:
        assert splits == {name: split for name, (_, split) in groups.items()}
        return
    assert set(splits.values()) == set(SPLITS)
    moved = [name for name in groups if splits[name] != groups[name][1]]
    assert len(moved) == sum(split not in (s for _, s in photos) for split in SPLITS)


def test_a_class_that_already_has_held_out_photos_is_untouched():
    groups = {"a": (5.0, "validation"), "b": (15.0, "test"), "c": (50.0, "train"), "d": (60.0, "train")}
    assert ensure_holdout(groups, REQUIRED) == {name: split for name, (_, split) in groups.items()}


def test_the_photo_with_the_lowest_hash_moves_and_a_disabled_split_gets_none():
    groups = {"a": (70.0, "train"), "b": (30.0, "train"), "c": (90.0, "train")}
    assert ensure_holdout(groups, REQUIRED) == {"a": "test", "b": "validation", "c": "train"}
    assert ensure_holdout(groups, ("train", "validation")) == {"a": "train", "b": "validation", "c": "train"}
