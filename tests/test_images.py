import shutil
from pathlib import Path

import pytest

from retrain.data.images import hash_percentage, label_for_folder, split_images
from retrain.errors import UserError
from tests.conftest import make_dataset, make_image


def splits(image_dir: Path) -> dict[str, str]:
    return {r.path.relative_to(image_dir).as_posix(): r.split for r in split_images(image_dir, 20, 20)}


def test_split_is_deterministic_and_uses_all_three_sets(tmp_path):
    root = make_dataset(tmp_path / "a", per_class=30)
    first = splits(root)
    assert first == splits(root)
    assert set(first.values()) == {"train", "validation", "test"}


def test_adding_images_moves_no_existing_image(tmp_path):
    root = make_dataset(tmp_path / "a", per_class=20)
    before = splits(root)
    for i in range(15):
        make_image(root / "red" / f"new_{i}.jpg", (200, 40, 40), seed=5000 + i)
    after = splits(root)
    assert len(after) == len(before) + 15
    assert {name: after[name] for name in before} == before


def test_moving_the_dataset_folder_changes_nothing(tmp_path):
    root = make_dataset(tmp_path / "a", per_class=20)
    before = splits(root)
    moved = tmp_path / "elsewhere" / "deeper" / "b"
    shutil.move(str(root), str(moved))
    assert splits(moved) == before


def test_nohash_variants_share_a_split():
    assert all(hash_percentage(f"cat.jpg_nohash_{i}.jpg") == hash_percentage("cat.jpg") for i in range(20))


def test_extensions_in_any_case_are_found_and_others_ignored(tmp_path):
    root = tmp_path / "imgs"
    for i, (name, fmt) in enumerate([("a.JPG", "JPEG"), ("b.Jpeg", "JPEG"), ("c.PNG", "PNG"), ("d.bmp", "BMP"),
                                     ("e.GIF", "GIF"), ("sub/f.jpg", "JPEG")]):
        make_image(root / "one" / name, (10, 20, 30), seed=i, fmt=fmt)
        make_image(root / "two" / name, (200, 20, 30), seed=100 + i, fmt=fmt)
    (root / "one" / "notes.txt").write_text("not an image")
    (root / "one" / ".hidden.jpg").write_bytes(b"")
    records = split_images(root, 10, 10)
    assert len(records) == 12
    assert {r.label for r in records} == {"one", "two"}


def test_label_follows_poets_rule():
    assert label_for_folder("Golden_Retriever") == "golden retriever"
    assert label_for_folder("cat-2") == "cat 2"


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "is not a folder"),
    (lambda root: make_image(root / "only" / "a.jpg", (1, 2, 3), 0), "at least two"),
    (lambda root: (make_image(root / "a" / "x.jpg", (1, 2, 3), 0), (root / "b").mkdir()), "has no images"),
    (lambda root: (make_image(root / "Cat" / "x.jpg", (1, 2, 3), 0), make_image(root / "cat" / "y.jpg", (1, 2, 3), 1)),
     "both give the label"),
])
def test_bad_image_dirs_raise_user_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(UserError, match=message):
        split_images(root)


def test_percentages_that_leave_no_training_data_are_refused(image_dir):
    with pytest.raises(UserError, match="no training images"):
        split_images(image_dir, 60, 40)
