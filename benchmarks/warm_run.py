"""Target 2: a warm run (full cache, default flags) at least 15x faster than a Poets-like one.

Both are whole processes, timed as a user waits for them (TensorFlow start-up
included): ``scripts.retrain`` and ``benchmarks.poets_baseline`` (per-image
text-file cache, every training batch read from those files), each on its
own already-filled cache. The caches are filled first, untimed. Runs
alternate so both see the same machine load; the median of each is compared.

    python -m benchmarks.warm_run [--image_dir DIR] [--rounds 2]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

from benchmarks.common import FLOWERS, WORK_DIR, machine, retrain_command, run_timed

TARGET = 15.0


def baseline_command(image_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.poets_baseline", "--image_dir", str(image_dir),
            "--bottleneck_dir", str(out / "bottlenecks"), "--output_graph", str(out / "graph.pb"),
            "--summaries_dir", str(out / "logs")]


def test_accuracy(stdout: str) -> str:
    found = re.search(r"Final test accuracy = ([\d.]+%)", stdout)
    return found.group(1) if found else "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=FLOWERS)
    parser.add_argument("--work_dir", type=Path, default=WORK_DIR / "warm")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(machine())
    ours_dir, baseline_dir = args.work_dir / "retrain", args.work_dir / "poets"
    commands = {"retrain": retrain_command(args.image_dir, ours_dir), "poets": baseline_command(args.image_dir,
                                                                                                 baseline_dir)}
    for name, command in commands.items():  # fill both caches (first runs), untimed for this target
        first = run_timed(command)
        print(f"{name} first (cold) run: {first.seconds:.1f} s, test accuracy {test_accuracy(first.stdout)}")
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(1, args.rounds + 1):
        for name, command in commands.items():
            run = run_timed(command)
            seconds[name].append(run.seconds)
            print(f"round {round_number}: {name} warm run {run.seconds:.1f} s, peak RSS {run.peak_rss_mb:.0f} MB, "
                  f"test accuracy {test_accuracy(run.stdout)}")
    ours, baseline = statistics.median(seconds["retrain"]), statistics.median(seconds["poets"])
    ratio = baseline / ours
    print(f"RESULT warm run: retrain {ours:.1f} s vs Poets-like baseline {baseline:.1f} s = {ratio:.1f}x faster "
          f"(target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
