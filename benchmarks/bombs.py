"""Decompression bombs in a photo folder: retrain and relabel finish, name each bomb, and stay under 1.5 GB.

The folder is the bundled example photos plus a 40000x40000 PNG, a
30000x30000 TIFF and a 20000x20000 GIF (4.8, 2.7 and 1.2 GB once decoded to
RGB; a few hundred kB each on disk). Each command runs in its own process;
its peak resident memory comes from ``wait4`` and is compared with the same
command on the photos alone.

    python -m benchmarks.bombs
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchmarks.common import PROJECT, WORK_DIR, Timed, machine, retrain_command, run_timed
from tests.hostile_files import gif_bomb, png_bomb, tiff_bomb

PHOTOS = PROJECT / "examples" / "flower_photos"
PEAK_RSS_LIMIT_MB = 1536
BOMBS = {"roses/bomb.png": (png_bomb, 40000, 40000), "tulips/bomb.tif": (tiff_bomb, 30000, 30000),
         "daisy/bomb.gif": (gif_bomb, 20000, 20000)}


def photo_folder(work: Path, with_bombs: bool) -> Path:
    """A fresh ``work`` folder (no cache: both runs are cold) holding the example photos, and the bombs if asked."""
    shutil.rmtree(work, ignore_errors=True)
    root = work / "photos"
    shutil.copytree(PHOTOS, root)
    if with_bombs:
        for name, (write, width, height) in BOMBS.items():
            write(root / name, width, height)
    return root


def run_both(work: Path, images: Path) -> dict[str, Timed]:
    """retrain then relabel (report only) on ``images``, each in its own process."""
    return {
        "retrain": run_timed(retrain_command(images, work / "out", "--how_many_training_steps", "200")),
        "relabel": run_timed([sys.executable, "-m", "scripts.relabel", "--graph", str(work / "out" / "graph.pb"),
                              "--image_dir", str(images), "--output_dir", str(work / "sorted"), "--mode", "report"]),
    }


def main() -> int:
    print(machine())
    plain = run_both(WORK_DIR / "bombs-none", photo_folder(WORK_DIR / "bombs-none", with_bombs=False))
    bombed = run_both(WORK_DIR / "bombs", photo_folder(WORK_DIR / "bombs", with_bombs=True))
    failed = False
    for command, run in bombed.items():
        warned = [name for name in BOMBS if any(Path(name).name in line and "warning" in line
                                                for line in run.stdout.splitlines())]
        failed |= len(warned) < len(BOMBS) or run.peak_rss_mb >= PEAK_RSS_LIMIT_MB
        print(f"{command}: exit 0 in {run.seconds:.0f} s, peak RSS {run.peak_rss_mb:.0f} MB "
              f"({run.peak_rss_mb / plain[command].peak_rss_mb:.2f}x the {plain[command].peak_rss_mb:.0f} MB "
              f"without bombs), bombs named in a warning: {len(warned)} of {len(BOMBS)}")
    print(f"RESULT bombs: retrain peak RSS {bombed['retrain'].peak_rss_mb:.0f} MB, relabel peak RSS "
          f"{bombed['relabel'].peak_rss_mb:.0f} MB (limit {PEAK_RSS_LIMIT_MB} MB); "
          f"{'every bomb named, both exit 0' if not failed else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
