"""Target 3: peak memory of a warm run grows no faster than the feature matrix; beyond the budget, streaming.

A synthetic cache of ``--rows`` (default 1,000,000) 1024-d float16 vectors
in five separable classes is written once (about 2 GiB). Each measurement
is a fresh process doing a warm run's work on the first N vectors: load and
verify the cache, split 80/10/10, train the head with default flags (4000
steps, batch 100), score the test set. The growth of peak RSS from N/4 to N
vectors is compared with the growth of the float16 matrix itself (small N
hide under TensorFlow's own start-up peak of ~0.9 GB); what grows beyond it
is printed in bytes per vector next to the key and location the run must
hold to read each vector, since no run can hold less. The last run gives the
full cache a budget below its size, so it streams.

    python -m benchmarks.memory [--rows 1000000] [--streaming_budget_gb 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import WORK_DIR, folder_size_mb, machine, peak_rss_mb, rss_mb, run_timed  # noqa: E402
from retrain.cache.bottlenecks import Bottlenecks  # noqa: E402
from retrain.cache.store import DEFAULT_MEMORY_BUDGET_GB, KEY_DTYPE, BottleneckCache  # noqa: E402
from retrain.training.batches import bottleneck_batches  # noqa: E402
from retrain.training.head import TrainingConfig, train_head  # noqa: E402
from retrain.training.splits import SplitData, evaluate_test_set  # noqa: E402

CACHE_ID = "synthetic-1024d"
FEATURE_SIZE = 1024
CLASSES = 5
SHARD_ROWS = 65536


def synthetic_keys(count: int) -> np.ndarray:
    return np.char.zfill(np.arange(count).astype("S40"), 40)  # b"000...0<i>", without a Python object per key


def synthetic_labels(count: int) -> np.ndarray:
    return (np.arange(count) % CLASSES).astype(np.int32)


def write_synthetic_cache(folder: Path, rows: int) -> BottleneckCache:
    """Shards of class mean + noise, written through the cache's own writer; reused when complete."""
    from tqdm import tqdm
    cache = BottleneckCache(folder, CACHE_ID, FEATURE_SIZE)
    done = folder / f"complete-{rows}"
    if done.exists():
        return cache
    for path in cache.shard_paths():
        path.unlink()
    rng = np.random.default_rng(0)
    means = rng.normal(0, 0.5, (CLASSES, FEATURE_SIZE)).astype(np.float32)
    for start in tqdm(range(0, rows, SHARD_ROWS), desc="Writing synthetic cache", unit="shard"):
        stop = min(start + SHARD_ROWS, rows)
        labels = synthetic_labels(stop)[start:]
        features = means[labels] + rng.standard_normal((stop - start, FEATURE_SIZE), dtype=np.float32)
        cache.write_shard([f"{i:040d}" for i in range(start, stop)], np.abs(features))
    done.touch()
    return cache


def load_features(folder: Path, rows: int, budget_gb: float):
    """What ``get_bottlenecks`` does on a warm run; its key index is gone once the features are returned."""
    keys = synthetic_keys(rows)
    cache = BottleneckCache(folder, CACHE_ID, FEATURE_SIZE)
    return cache.load(keys, log=print).read_features(keys, budget_gb)[1]


def warm_work(folder: Path, rows: int, budget_gb: float) -> dict:
    """What a warm run does with N cached vectors, measured from inside one process."""
    import tensorflow as tf
    tf.constant(0.0).numpy()  # TensorFlow fully started: the fixed cost every run pays
    before = rss_mb()
    started = time.monotonic()
    features = load_features(folder, rows, budget_gb)
    labels = synthetic_labels(rows)
    bounds = [0, rows * 8 // 10, rows * 9 // 10, rows]
    cached = Bottlenecks(np.arange(rows), features, [], 0, 0)
    train, validation, test = (SplitData([], labels[a:b], cached.rows_for(a, b)) for a, b in zip(bounds, bounds[1:]))
    config = TrainingConfig()
    batches = bottleneck_batches(train.features, train.labels, config.draws, budget_gb, print)
    head = train_head(batches, FEATURE_SIZE, CLASSES, config, validation=(validation.features, validation.labels))
    report, _, _ = evaluate_test_set(head, test, [str(c) for c in range(CLASSES)], -1, np.random.default_rng(0))
    return dict(rows=rows, budget_gb=budget_gb, streamed=not isinstance(features, np.ndarray),
                seconds=time.monotonic() - started, rss_before_mb=before, peak_rss_mb=peak_rss_mb(),
                accuracy=report.accuracy)


def measure(folder: Path, rows: int, budget_gb: float) -> dict:
    run = run_timed([sys.executable, "-m", "benchmarks.memory", "--worker", str(rows), "--budget_gb", str(budget_gb),
                     "--work_dir", str(folder.parent)])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--streaming_budget_gb", type=float, default=0.5)
    parser.add_argument("--work_dir", type=Path, default=WORK_DIR / "memory")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--budget_gb", type=float, default=DEFAULT_MEMORY_BUDGET_GB, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    folder = args.work_dir / "cache"
    if args.worker:
        print(json.dumps(warm_work(folder, args.worker, args.budget_gb)))
        return 0
    print(machine())
    write_synthetic_cache(folder, args.rows)
    print(f"synthetic cache: {args.rows} x {FEATURE_SIZE} float16, {folder_size_mb(folder):.0f} MB on disk")
    runs = [measure(folder, rows, DEFAULT_MEMORY_BUDGET_GB) for rows in (args.rows // 4, args.rows // 2, args.rows)]
    runs.append(measure(folder, args.rows, args.streaming_budget_gb))
    for run in runs:
        matrix_mb = run["rows"] * FEATURE_SIZE * 2 / 2 ** 20
        where = "streamed" if run["streamed"] else "in memory"
        print(f"{run['rows']:>9} vectors, budget {run['budget_gb']:g} GiB, {where}: float16 matrix {matrix_mb:.0f} MB, "
              f"peak RSS {run['peak_rss_mb']:.0f} MB ({run['rss_before_mb']:.0f} MB before loading), "
              f"{run['seconds']:.0f} s, test accuracy {run['accuracy']:.1%}")
    quarter, half, full, streamed = runs
    matrix_mb_per_row = FEATURE_SIZE * 2 / 2 ** 20
    growth = {name: (full["peak_rss_mb"] - run["peak_rss_mb"]) / ((full["rows"] - run["rows"]) * matrix_mb_per_row)
              for name, run in (("N/4", quarter), ("N/2", half))}
    # Reading a vector means knowing its key and where it is: the one thing besides the matrix that must grow.
    index_bytes = np.dtype(KEY_DTYPE).itemsize + 2 * np.dtype(np.int32).itemsize
    excess = {name: (g - 1) * FEATURE_SIZE * 2 for name, g in growth.items()}
    print(f"RESULT memory: from N/4 to N vectors peak RSS grows {growth['N/4']:.3f} MB per MB of float16 feature "
          f"matrix, from N/2 to N {growth['N/2']:.3f}: the matrix plus {excess['N/4']:.0f} and {excess['N/2']:.0f} "
          f"bytes per vector (each vector's key and location in the cache: {index_bytes} bytes; the float16 row: "
          f"{FEATURE_SIZE * 2} bytes; {growth['N/4'] / 2:.3f} MB per MB of the float32 features); "
          f"{streamed['rows']} vectors with --memory_budget_gb {streamed['budget_gb']:g}: streamed, peak RSS "
          f"{streamed['peak_rss_mb']:.0f} MB vs {full['peak_rss_mb']:.0f} MB in memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
