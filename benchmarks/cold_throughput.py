"""Target 1: cold bottleneck extraction at >= 90% of the backbone's pure forward throughput.

Pure forward: the backbone on an already-decoded, already-normalised batch
held in memory, at its best batch size (the physical limit of this machine).
End to end: ``get_bottlenecks`` on the photos with an empty cache (hash, read,
decode, resize, backbone, cache write, read back). The machine is shared, so
the two are measured alternately, ``--rounds`` times, and the best of each is
compared, as is each adjacent pair. CPU seconds per image are reported too:
unlike wall time, they do not depend on what else the machine is running.

    python -m benchmarks.cold_throughput [--image_dir DIR] [--rounds 3]
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
from retrain.architectures import DEFAULT_ARCHITECTURE, get_architecture  # noqa: E402
from retrain.backbones import load_backbone  # noqa: E402
from retrain.bottlenecks import BottleneckCache, get_bottlenecks  # noqa: E402
from retrain.images import split_images  # noqa: E402
from retrain.paths import DEFAULT_MODEL_DIR  # noqa: E402

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
                        report=lambda message: None)
        return len(paths) / (time.monotonic() - started), (time.process_time() - cpu) / len(paths)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=FLOWERS)
    parser.add_argument("--architecture", default=DEFAULT_ARCHITECTURE)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--forward_seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(machine())
    backbone = load_backbone(get_architecture(args.architecture), DEFAULT_MODEL_DIR)
    paths = [record.path for record in split_images(args.image_dir)]
    by_batch = {size: forward_throughput(backbone, size, args.forward_seconds)[0] for size in args.batch_sizes}
    best_batch = max(by_batch, key=by_batch.get)
    print("pure forward by batch size: " + ", ".join(f"{k}: {v:.1f} img/s" for k, v in by_batch.items())
          + f" -> best batch {best_batch}")
    forward, end_to_end = [], []
    for round_number in range(1, args.rounds + 1):
        forward.append(forward_throughput(backbone, best_batch, args.forward_seconds))
        end_to_end.append(extraction_throughput(backbone, paths, best_batch))
        (f_rate, f_cpu), (e_rate, e_cpu) = forward[-1], end_to_end[-1]
        print(f"round {round_number}: pure forward {f_rate:.1f} img/s ({f_cpu * 1000:.0f} CPU ms/img), end to end "
              f"{e_rate:.1f} img/s ({e_cpu * 1000:.0f} CPU ms/img, {len(paths)} images), ratio {e_rate / f_rate:.1%}")
    best_forward, best_end_to_end = max(r for r, _ in forward), max(r for r, _ in end_to_end)
    ratio = best_end_to_end / best_forward
    pairs = sorted(e[0] / f[0] for e, f in zip(end_to_end, forward))
    cpu_ratio = min(c for _, c in forward) / min(c for _, c in end_to_end)
    print(f"RESULT cold extraction: best end to end {best_end_to_end:.1f} img/s vs best pure forward "
          f"{best_forward:.1f} img/s at batch {best_batch} = {ratio:.1%} (median adjacent pair "
          f"{pairs[len(pairs) // 2]:.1%}; CPU time per image, pure forward / end to end: {cpu_ratio:.1%}; "
          f"target >= {TARGET:.0%}: {'met' if ratio >= TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
