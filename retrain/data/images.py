"""Find labelled images and assign each to train, validation or test, stably.

The split is decided by a hash of each file's name *relative to its class
folder*, so adding images never moves old ones between sets and moving the
whole dataset folder changes nothing. Anything after ``_nohash_`` in a name is
ignored, so variants of one photo (``cat_nohash_1.jpg``, ``cat_nohash_2.jpg``)
land in the same set and can't leak between training and test.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import UserError, option_name, option_value

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Same constant as TensorFlow-for-Poets, so a split there maps onto ours.
MAX_NUM_IMAGES_PER_CLASS = 2 ** 27 - 1
SPLITS = ("train", "validation", "test")
MIN_PHOTOS_PER_CLASS_FOR_HOLDOUT = 3  # one to train on, one to validate, one to test


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image: where it is, its class and which set it belongs to."""
    path: Path
    label: str
    split: str


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def iter_image_files(folder: Path) -> Iterable[Path]:
    """Image files below ``folder`` (recursively, any letter case), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / name for name in files if is_image_file(Path(name)))
    return sorted(found)


def label_for_folder(folder_name: str) -> str:
    """Poets' label rule: lower case, runs of other characters become one space."""
    return re.sub(r"[^a-z0-9]+", " ", folder_name.lower()).strip()


def hash_percentage(relative_name: str) -> float:
    """Where an image falls in [0, 100] by the hash of its name relative to its class folder (Poets' rule)."""
    hash_name = re.sub(r"_nohash_.*$", "", relative_name)
    # fsencode: the UTF-8 bytes Poets hashed, and file names that are not valid UTF-8 (old archives) work too
    digest = int(hashlib.sha1(os.fsencode(hash_name)).hexdigest(), 16)
    return (digest % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)


def split_at(percentage: float, validation_percentage: float, testing_percentage: float) -> str:
    """Which set an image belongs to by its hash alone (a small class may then get one moved: ensure_every_split)."""
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "test"
    return "train"


def ensure_every_split(photos: dict[float, str], required: Sequence[str]) -> dict[float, str]:
    """The splits of one class's photos (keyed by hash percentage), each ``required`` split given at least one.

    With 10% held out each for validation and test, a class of 5 photos often
    gets none of either: its accuracy is never measured (Poets users' most
    common complaint with small datasets). So an empty required split takes
    the photo with the lowest hash from the first of ``required`` that keeps
    at least one photo. Variants of one photo (``_nohash_``) share a hash and
    move together. A class with fewer photos than splits to fill (or than
    ``MIN_PHOTOS_PER_CLASS_FOR_HOLDOUT``) is left as it is.
    """
    splits = dict(photos)
    if len(splits) < max(MIN_PHOTOS_PER_CLASS_FOR_HOLDOUT, len(required)):
        return splits
    for wanted in required:
        counts = Counter(splits.values())
        if not counts[wanted]:
            donor = next(split for split in [*required, *counts] if counts[split] > 1)
            splits[min(key for key, split in splits.items() if split == donor)] = wanted
    return splits


def find_class_folders(image_dir: str | os.PathLike) -> dict[str, Path]:
    """Map label -> class folder for each sub-folder of ``image_dir``."""
    root = Path(image_dir)
    if not str(image_dir):
        raise UserError(f"no {option_name('image_dir')} given; point it at a folder with one sub-folder of images "
                        f"per class")
    if not root.is_dir():
        raise UserError(f"{option_value('image_dir', root)} is not a folder; point it at a folder with one sub-folder "
                        f"of images per class")
    classes: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = label_for_folder(folder.name)
        if not label:
            raise UserError(f"class folder {folder.name!r} gives an empty label; "
                            "rename it to include letters or digits")
        if label in classes:
            raise UserError(f"class folders {classes[label].name!r} and {folder.name!r} both give the label "
                            f"{label!r}; rename one of them")
        classes[label] = folder
    return classes


def split_images(image_dir: str | os.PathLike, testing_percentage: float = 10,
                 validation_percentage: float = 10) -> list[ImageRecord]:
    """All labelled images under ``image_dir``, each with its stable split, grouped by split in ``SPLITS`` order.

    Grouped, so each split's bottlenecks are one contiguous block of rows: a
    view of the feature matrix, never a copy. Within a split, images keep the
    order of their labels and file names.
    """
    for name, value in (("testing", testing_percentage), ("validation", validation_percentage)):
        if not 0 <= value < 100:
            raise UserError(f"{option_name(f'{name}_percentage')} must be from 0 to under 100, got {value}")
    if testing_percentage + validation_percentage >= 100:
        raise UserError(f"{option_name('testing_percentage')} plus {option_name('validation_percentage')} leave no "
                        f"training images; keep their sum under 100")
    classes = find_class_folders(image_dir)
    required = ["train", *(split for split, percentage in (("validation", validation_percentage),
                                                          ("test", testing_percentage)) if percentage > 0)]
    records = []
    for label, folder in classes.items():
        files = iter_image_files(folder)
        if not files:
            raise UserError(f"class folder {folder} has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            f"add some or remove the folder")
        files = files[:MAX_NUM_IMAGES_PER_CLASS]
        keys = [hash_percentage(path.relative_to(folder).as_posix()) for path in files]
        splits = ensure_every_split({key: split_at(key, validation_percentage, testing_percentage)
                                     for key in keys}, required)
        records.extend(ImageRecord(path, label, splits[key]) for path, key in zip(files, keys))
    if len(classes) < 2:
        raise UserError(f"found {len(classes)} class folder(s) in {image_dir}; a classifier needs at least two "
                        f"sub-folders of images, one per class")
    return sorted(records, key=lambda record: SPLITS.index(record.split))


def labels_of(records: Iterable[ImageRecord]) -> list[str]:
    """Sorted label list: the row order of the labels file and the softmax."""
    return sorted({record.label for record in records})


def split_summary(records: Sequence[ImageRecord]) -> str:
    """One line of split counts; classes with at most one image in a held-out split are listed with theirs."""
    labels = labels_of(records)
    counts = {(label, split): 0 for label in labels for split in SPLITS}
    for record in records:
        counts[record.label, record.split] += 1
    totals = {split: sum(counts[label, split] for label in labels) for split in SPLITS}
    line = (f"Found {len(records)} images in {len(labels)} classes: {totals['train']} train, "
            f"{totals['validation']} validation, {totals['test']} test")
    held_out = [split for split in SPLITS[1:] if totals[split]]
    small = [label for label in labels if any(counts[label, split] <= 1 for split in held_out)]
    if small:
        line += "; small classes (train/validation/test): " + ", ".join(
            f"{label!r} " + "/".join(str(counts[label, split]) for split in SPLITS) for label in small)
    return line
