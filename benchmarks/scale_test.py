"""Target 4: 20,000 generated 500x375 JPEGs, cold and warm.

The JPEGs are generated once under ``--image_root`` (outside the repository)
and reused. Both runs are whole ``scripts.retrain`` processes with default
training flags; reported: wall time, images per second, peak RSS, and the
cache's size on disk.

    python -m benchmarks.scale_test [--images 20000]
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from benchmarks.common import WORK_DIR, folder_size_mb, generate_jpegs, machine, retrain_command, run_timed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--image_root", type=Path, default=Path("/tmp/retrain_scale"))
    parser.add_argument("--work_dir", type=Path, default=WORK_DIR / "scale")
    args = parser.parse_args(argv)
    print(machine())
    image_dir = args.image_root / "images"
    if args.images != 20000:
        image_dir = args.image_root / f"images_{args.images}"
    generate_jpegs(image_dir, args.images)
    shutil.rmtree(args.work_dir, ignore_errors=True)  # the cold run starts from an empty cache
    command = retrain_command(image_dir, args.work_dir)
    for name in ("cold", "warm"):
        run = run_timed(command)
        accuracy = re.search(r"Final test accuracy = ([\d.]+%)", run.stdout)
        cache_mb = folder_size_mb(args.work_dir / "bottlenecks")
        print(f"RESULT scale {name}: {args.images} images in {run.seconds:.0f} s = {args.images / run.seconds:.1f} "
              f"img/s, peak RSS {run.peak_rss_mb:.0f} MB, cache {cache_mb:.1f} MB on disk, test accuracy "
              f"{accuracy.group(1) if accuracy else '?'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
