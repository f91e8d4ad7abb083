"""Target 1: cold bottleneck extraction at >= 90% of the backbone's pure forward throughput.

Pure forward: the backbone on an already-decoded, already-normalised batch
held in memory, at its best batch size (the physical limit of this machine).
End to end: ``get_bottlenecks`` on the photos with an empty cache (hash, read,
decode, resize, backbone, cache write, read back). The machine is shared, so
the two are measured alternately, ``--rounds`` times: each end-to-end run is
divided by the mean of the forward runs just before and after it, and the
median of these ratios is the result. On this shared host the CPU time of the
very same forward pass drifts by 20% within minutes, so a ratio of runs made
at different times (such as best vs best, also printed) measures the host's
drift as much as the pipeline.

    python -m benchmarks.cold_throughput [--image_dir DIR] [--rounds 8]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import FLOWERS, machine  # noqa: E402
from retrain.cache.bottlenecks import get_bottlenecks  # noqa: E402
from retrain.cache.store import BottleneckCache  # noqa: E402
from retrain.data.images import split_images  # noqa: E402
from retrain.files import DEFAULT_MODEL_DIR  # noqa: E402
from retrain.models.architectures import DEFAULT_ARCHITECTURE, get_architecture  # noqa: E402
from retrain.models.backbones import load_backbone  # noqa: E402

TARGET = 0.90


def forward_throughput(backbone, batch_size: int, seconds: float) -> tuple[float, float]:
    """(images per second, CPU seconds per image) of the backbone alone on one decoded, normalised batch."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    size = backbone.input_size
    batch = tf.constant(rng.uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32))
    backbone.features_from_normalized(batch).numpy()  # warm-up
    images, started, cpu = 0, time.monotonic(), time.process_time()
    while time.monotonic() - started < seconds:
        backbone.features_from_normalized(batch).numpy()
        images += batch_size
    return images / (time.monotonic() - started), (time.process_time() - cpu) / images


def extraction_throughput(backbone, paths: list[Path], batch_size: int) -> tuple[float, float]:
    """(images per second, CPU seconds per image) of ``get_bottlenecks`` with an empty cache."""
    folder = Path(tempfile.mkdtemp(prefix="cold_bench_"))
    try:
        cache = BottleneckCache(folder, backbone.spec.cache_id, backbone.feature_size)
        started, cpu = time.monotonic(), time.process_time()
        get_bottlenecks(paths, backbone, backbone.input_size, cache, batch_size=batch_size,
                        log=lambda message: None)
        return len(paths) / (time.monotonic() - started), (time.process_time() - cpu) / len(paths)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=FLOWERS)
    parser.add_argument("--architecture", default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--forward_seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    print(machine())
    backbone = load_backbone(get_architecture(args.architecture), DEFAULT_MODEL_DIR)
    paths = [record.path for record in split_images(args.image_dir)]
    by_batch = {size: forward_throughput(backbone, size, args.forward_seconds)[0] for size in args.batch_sizes}
    best_batch = max(by_batch, key=by_batch.get)
    print("pure forward by batch size: " + ", ".join(f"{k}: {v:.1f} img/s" for k, v in by_batch.items())
          + f" -> best batch {best_batch}")
    # Forward, end to end, forward, end to end, ..., forward: each end-to-end run is compared with the mean of
    # the forward runs just before and after it, so a neighbour's load that comes and goes hits both sides.
    forward = [forward_throughput(backbone, best_batch, args.forward_seconds)]
    end_to_end, bracketed = [], []
    for round_number in range(1, args.rounds + 1):
        end_to_end.append(extraction_throughput(backbone, paths, best_batch))
        forward.append(forward_throughput(backbone, best_batch, args.forward_seconds))
        (e_rate, e_cpu), around = end_to_end[-1], [rate for rate, _ in forward[-2:]]
        bracketed.append(e_rate / np.mean(around))
        print(f"round {round_number}: end to end {e_rate:.1f} img/s ({e_cpu * 1000:.1f} CPU ms/img, {len(paths)} "
              f"images) between pure forward {around[0]:.1f} and {around[1]:.1f} img/s "
              f"({forward[-1][1] * 1000:.1f} CPU ms/img): ratio {bracketed[-1]:.1%}")
    best_forward, best_end_to_end = max(r for r, _ in forward), max(r for r, _ in end_to_end)
    best_ratio, median_ratio = best_end_to_end / best_forward, float(np.median(bracketed))
    cpu_ratio = float(np.median([c for _, c in forward]) / np.median([c for _, c in end_to_end]))
    print(f"RESULT cold extraction at batch {best_batch}: end to end / pure forward, median of {len(bracketed)} "
          f"bracketed rounds: {median_ratio:.1%} (target >= {TARGET:.0%}: "
          f"{'met' if median_ratio >= TARGET else 'NOT met'}); rounds ranged {min(bracketed):.1%} to "
          f"{max(bracketed):.1%}; best end to end {best_end_to_end:.1f} img/s vs best pure forward "
          f"{best_forward:.1f} img/s = {best_ratio:.1%}; CPU time per image, pure forward / end to end "
          f"(medians): {cpu_ratio:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
