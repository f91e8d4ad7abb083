"""Issue 11: the Beam pipeline on the local runner vs retrain's own cold extraction, side by side.

Both fill an empty cache from the same generated photos with the same
backbone and batch size; retrain runs just before and after each Beam run and
their mean is the comparison, as the shared host's speed drifts. retrain: ``get_bottlenecks`` in this process (the
backbone already loaded, as in cold_throughput). Beam: ``run_extract`` with
the default local runner (one worker process per core), timed from submit to
the last shard, so it includes what Beam adds: worker start-up and their own
backbone loading, listing, hashing, the join with the cache, and shard
writes. A second, tiny Beam run measures the fixed start-up, so the overhead
per image is (Beam - start-up - retrain) / images.

    python -m benchmarks.beam_extract [--images 2000] [--beam_workers 0 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import PROJECT, WORK_DIR, generate_jpegs, machine  # noqa: E402
from retrain.cache.bottlenecks import get_bottlenecks  # noqa: E402
from retrain.cache.store import BottleneckCache  # noqa: E402
from retrain.files import DEFAULT_MODEL_DIR  # noqa: E402
from retrain.models.architectures import DEFAULT_ARCHITECTURE, get_architecture  # noqa: E402
from retrain.models.backbones import load_backbone  # noqa: E402
from retrain.scale.beam_extract import ExtractJob  # noqa: E402
from retrain.scale.beam_launch import run_extract  # noqa: E402

STARTUP_IMAGES = 20


def retrain_seconds(backbone, paths: list[Path], batch_size: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="beam_bench_retrain_"))
    try:
        cache = BottleneckCache(folder, backbone.spec.cache_id, backbone.feature_size)
        started = time.monotonic()
        get_bottlenecks(paths, backbone, backbone.input_size, cache, batch_size=batch_size,
                        log=lambda message: None)
        return time.monotonic() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def beam_seconds(image_dir: Path, spec, batch_size: int, workers: int) -> tuple[float, int]:
    """Wall seconds of one Beam run on an empty cache, and how many vectors it computed."""
    folder = Path(tempfile.mkdtemp(prefix="beam_bench_beam_"))
    try:
        job = ExtractJob(str(image_dir), spec, str(DEFAULT_MODEL_DIR), str(folder), batch_size)
        started = time.monotonic()
        summary = run_extract(job, [f"--direct_num_workers={workers}"], log=lambda message: None)
        return time.monotonic() - started, summary.computed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--architecture", default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--beam_workers", type=int, nargs="+", default=[0],
                        help="worker processes of the local runner to try; 0 = one per core (the default)")
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = str(PROJECT)  # Beam's worker processes import this checkout
    print(machine())
    photos = WORK_DIR / "beam_photos"
    paths = generate_jpegs(photos, args.images)
    startup_dir = WORK_DIR / "beam_photos_startup"
    if not startup_dir.is_dir():
        shutil.copytree(paths[0].parent, startup_dir / "one", ignore=lambda _, names: sorted(names)[STARTUP_IMAGES:])
    backbone = load_backbone(get_architecture(args.architecture), DEFAULT_MODEL_DIR)

    def timed_retrain() -> float:
        seconds = retrain_seconds(backbone, paths, args.batch_size)
        print(f"retrain cold extraction: {len(paths) / seconds:.1f} img/s ({seconds:.1f} s for {len(paths)} images)")
        return seconds

    results, before = [], timed_retrain()
    for workers in args.beam_workers:
        shown = workers or os.cpu_count()
        startup, tiny = beam_seconds(startup_dir, backbone.spec, args.batch_size, workers)
        total, computed = beam_seconds(photos, backbone.spec, args.batch_size, workers)
        assert computed == len(paths), f"Beam computed {computed} of {len(paths)} vectors"
        after = timed_retrain()
        retrain, before = (before + after) / 2, after
        retrain_rate, rate = len(paths) / retrain, len(paths) / total
        fixed = startup - tiny / retrain_rate  # the small run's time beyond its own computing
        overhead_ms = (total - fixed - retrain) / len(paths) * 1000
        results.append((shown, rate, retrain_rate, fixed, overhead_ms))
        print(f"Beam local, {shown} worker process(es): {rate:.1f} img/s ({total:.1f} s), {rate / retrain_rate:.2f}x "
              f"retrain; fixed start-up {fixed:.1f} s ({tiny} images took {startup:.1f} s), overhead beyond "
              f"it {overhead_ms:+.1f} ms/img (retrain runs around it: {retrain_rate:.1f} img/s)")
    shown, rate, retrain_rate, fixed, overhead_ms = results[0]
    print(f"RESULT {len(paths)} photos, {args.architecture}, batch {args.batch_size}: Beam local runner "
          f"({shown} workers) {rate:.1f} img/s vs retrain cold {retrain_rate:.1f} img/s = {rate / retrain_rate:.2f}x; "
          f"Beam adds {fixed:.1f} s start-up and {overhead_ms:+.1f} ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
