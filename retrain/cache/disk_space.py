"""Whether a run's cache fits on its disk, checked before the first image is decoded.

Cut caches run to gigabytes (4 views of 2,934 photos at 14x14x512 are 2.4 GB). A disk that fills anyway,
from elsewhere, still stops the run with one line when a shard cannot be written (``files.atomic_write``),
and the next run resumes from the shards already written; this check only spares a user the hour of caching
that a disk too small from the start would cost.
"""
from __future__ import annotations

from ..errors import Log, UserError, option_name
from ..files import free_bytes, megabytes
from .store import FLOAT16_BYTES, BottleneckCache


def planned_cache_bytes(cache: BottleneckCache, rows: int, copies: int, blocks: int, log: Log = print) -> int:
    """Say what the run's cache will take, and stop the run now if that cannot fit on the disk.

    Args:
        cache: the run's bottleneck cache.
        rows: the rows the run caches: every image, and ``copies`` views of each training image.
        copies: ``--augment_copies``.
        blocks: ``--fine_tune_blocks``.
        log: where the line goes.

    Returns:
        The most bytes the rows take (float16 values).
    """
    estimate = rows * cache.feature_size * FLOAT16_BYTES
    log(f"Cache: {rows} rows of {cache.feature_size} float16 values ({megabytes(estimate)} on disk at most) in "
        f"{cache.directory.parent}" + (f", {copies} distorted views per training image" if copies else ""))
    check_cache_fits(cache, estimate, copies, blocks)
    return estimate


def cached_bytes(cache: BottleneckCache) -> int:
    """Bytes the cache's shards hold already: the part of a run's estimate an earlier run may have written."""
    total = 0
    for path in cache.shard_paths():
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue  # merged away by another process meanwhile
    return total


def check_cache_fits(cache: BottleneckCache, estimate: int, copies: int, blocks: int) -> None:
    """Raise a UserError when the run's cache cannot fit on the disk of ``cache``'s folder.

    What the cache already holds counts as written (cheap to know: one stat per shard). It may hold rows of
    other images too, so the check errs towards starting a run, never towards refusing one that fits.

    Args:
        cache: the run's bottleneck cache.
        estimate: the most bytes the run's rows take (values times float16 bytes, views included).
        copies: ``--augment_copies``, to suggest fewer.
        blocks: ``--fine_tune_blocks``, to suggest fewer.
    """
    already = cached_bytes(cache)
    needed = max(0, estimate - already)
    free = free_bytes(cache.directory)
    if needed <= free:
        return
    ways = [f"give {option_name('bottleneck_dir')} a folder on a disk with more room"]
    if copies:
        ways.append(f"fewer {option_name('augment_copies')} (now {copies})")
    if blocks:
        ways.append(f"fewer {option_name('fine_tune_blocks')} (now {blocks}; 0 caches one pooled vector per image)")
    held = f" ({megabytes(already)} of its {megabytes(estimate)} are cached already)" if already else ""
    raise UserError(f"the cache needs {megabytes(needed)} more on the disk of {cache.directory.parent}{held}, which "
                    f"has {megabytes(free)} free: {', or '.join(ways)}")
