"""Give small classes a validation and a test image that the hash split alone would not.

With 10% of the images held out each for validation and test, a class of 5
photos often gets none of either: its accuracy is never measured and early
stopping cannot see it (Poets users' most common complaint with small
datasets). The stable hash split stays; only a class that ends up without a
held-out image gets one moved to it, always the same one: the photo whose
hash is lowest in the split it comes from.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

MIN_PHOTOS_FOR_HOLDOUT = 3  # one to train on, one to validate, one to test


def ensure_holdout(groups: dict[str, tuple[float, str]], required: Iterable[str]) -> dict[str, str]:
    """The split of each photo of one class, with every ``required`` split given at least one photo.

    ``groups`` maps a photo's hash name (variants of one photo, ``_nohash_``,
    share it and always move together) to its hash percentage and its hash
    split. ``required`` lists the splits in the order they are filled and
    drawn from: training first, then the held-out splits whose percentage is
    above 0. A photo is only taken from a split that keeps at least one.
    Classes with fewer than ``MIN_PHOTOS_FOR_HOLDOUT`` photos are left as they are.
    """
    splits = {name: split for name, (_, split) in groups.items()}
    required = list(required)
    if len(groups) < max(MIN_PHOTOS_FOR_HOLDOUT, len(required)):
        return splits
    for wanted in required:
        counts = Counter(splits.values())
        if counts[wanted]:
            continue
        donor = next(s for s in [*required, *counts] if counts[s] > 1)
        moved = min((name for name, split in splits.items() if split == donor), key=lambda name: groups[name][0])
        splits[moved] = wanted
    return splits
