"""Helpers shared by the benchmark commands: timed child processes, peak memory, generated data."""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
FLOWERS = PROJECT.parent / "shared" / "data" / "flower_photos"
WORK_DIR = Path(tempfile.gettempdir()) / "retrain_bench"


@dataclass
class Timed:
    """One finished command: wall seconds, its own peak RSS, its output."""
    seconds: float
    peak_rss_mb: float
    stdout: str


def run_timed(args: list[str]) -> Timed:
    """Run a command in its own process and measure it as a user would wait for it.

    ``wait4`` gives this child's own peak RSS (``RUSAGE_CHILDREN`` would be
    the largest of all children so far).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(PROJECT))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        child = subprocess.Popen(args, cwd=PROJECT, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{err.read()[-3000:]}")
        return Timed(seconds, usage.ru_maxrss / 1024, out.read())


def retrain_command(image_dir: Path, out: Path, *extra: str) -> list[str]:
    """``scripts.retrain`` with default training flags and every output under ``out``."""
    return [sys.executable, "-m", "scripts.retrain", "--image_dir", str(image_dir),
            "--output_graph", str(out / "graph.pb"), "--output_labels", str(out / "labels.txt"),
            "--summaries_dir", str(out / "logs"), "--bottleneck_dir", str(out / "bottlenecks"), *extra]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident memory of this process now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def folder_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2 ** 20


def machine() -> str:
    """What the figures were measured on, for the results table."""
    load = os.getloadavg()[0]
    return (f"{platform.node()}: {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"load average {load:.1f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def generate_jpegs(root: Path, count: int, classes: int = 10, size: tuple[int, int] = (500, 375),
                   seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth colour fields plus noise, a tint per class); kept and reused."""
    from PIL import Image
    from tqdm import tqdm
    paths = [root / f"class_{i % classes:02d}" / f"img_{i:06d}.jpg" for i in range(count)]
    missing = [p for p in paths if not p.exists()]
    tints = np.random.default_rng(seed).uniform(40, 215, (classes, 3))
    for path in tqdm(missing, desc="Generating JPEGs", unit="img", disable=not missing):
        index = int(path.stem.split("_")[1])
        rng = np.random.default_rng(seed + 1 + index)
        coarse = np.clip(tints[index % classes] + rng.normal(0, 45, (6, 8, 3)), 0, 255).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC), np.float32)
        pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        Image.fromarray(pixels).save(partial, format="JPEG", quality=90)
        os.replace(partial, path)  # an interrupted generation never leaves a truncated JPEG behind
    return paths
