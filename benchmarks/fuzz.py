"""Fuzz the image decoder and the model loader through the entry points users hit.

Every case is a seeded mutation of a valid file: JPEG, PNG, GIF, BMP, TIFF and
WebP images (several modes each, plus decompression bombs) go through
``load_rgb``, as retrain, label_image, relabel and evaluate decode them;
frozen graphs (ours and Poets-style) and labels files go through
``GraphLabeler``, as label_image, relabel and evaluate load them, then label
an image. A case must end as a decoded image (a labelled one) or a one-line
skip or error. Cases run in a worker process watched from outside: a worker
that dies is a crash, one that takes longer than the time limit a hang, one
whose resident memory passes the limit is over memory, and any exception
other than the expected one (it would print a traceback) is a failure.

    python -m benchmarks.fuzz [--image_cases 11000] [--model_cases 1000] [--seed 0]

Prints the outcome counts and a final ``RESULT`` line; exit code 1 if any case failed.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import PROJECT, machine

# What a case may cost: a decode within the default pixel budget stays near 1 GB (16-bit or alpha images),
# and a model worker holds TensorFlow (~0.6 GB) besides.
LIMITS = {"image": (5.0, 1500), "model": (10.0, 2500)}  # kind -> (seconds, resident MB)
GOOD_OUTCOMES = {"image": {"decoded", "skipped"}, "model": {"labelled", "refused"}}
MUTATIONS = ("flip", "interesting", "big_int", "insert", "delete", "duplicate", "truncate")


@dataclass
class Tally:
    """Outcome counts of a fuzz run, and the cases that failed (kind, case number, outcome)."""
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    failures: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, kind: str, case: int, outcome: str) -> None:
        self.outcomes[f"{kind} {outcome.split(':')[0]}"] += 1
        if outcome not in GOOD_OUTCOMES[kind]:
            self.failures.append((kind, case, outcome))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random byte-level mutations, biased towards headers where sizes live."""
    data = bytearray(data)
    for _ in range(rng.integers(1, 4)):
        if not data:
            break
        kind = MUTATIONS[rng.integers(len(MUTATIONS))]
        at = int(rng.integers(min(len(data), 64))) if rng.random() < 0.5 else int(rng.integers(len(data)))
        if kind == "flip":
            data[at] ^= 1 << int(rng.integers(8))
        elif kind == "interesting":
            data[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF]))
        elif kind == "big_int":
            width = int(rng.choice([2, 4]))
            value = int(rng.choice([0xFFFF, 0x7FFF, 0x7FFFFFFF, 0xFFFFFFFF, int(rng.integers(1 << 16))]))
            data[at:at + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, rng.choice(["big", "little"]))
        elif kind == "insert":
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
        elif kind == "delete":
            del data[at:at + int(rng.integers(1, 64))]
        elif kind == "duplicate":
            start = int(rng.integers(len(data)))
            data[at:at] = data[start:start + int(rng.integers(1, 128))]
        else:
            del data[at:]
    return bytes(data)


def seed_images() -> list[tuple[str, bytes]]:
    """Small valid images of every format and mode we read, and three bombs: (file suffix, bytes)."""
    from PIL import Image

    from tests.hostile_files import gif_bomb, png_bomb, tiff_bomb
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    variants = [
        (".jpg", rgb, {}), (".jpg", rgb.convert("L"), {}), (".jpg", rgb.convert("CMYK"), {}),
        (".jpg", rgb, {"progressive": True}), (".png", rgb, {}), (".png", rgb.convert("RGBA"), {}),
        (".png", rgb.convert("P"), {"transparency": 0}), (".png", rgb.convert("I;16"), {}),
        (".png", rgb.convert("1"), {}), (".gif", rgb.convert("P"), {"save_all": True, "append_images": [rgb]}),
        (".bmp", rgb, {}), (".bmp", rgb.convert("P"), {}), (".tif", rgb, {"compression": "tiff_deflate"}),
        (".tif", rgb, {"compression": "tiff_lzw"}), (".tif", rgb.convert("I;16"), {}),
        (".webp", rgb, {"quality": 80}), (".webp", rgb.convert("RGBA"), {"lossless": True}),
        (".webp", rgb, {"save_all": True, "append_images": [rgb.convert("L").convert("RGB")]}),
    ]
    seeds = []
    for suffix, image, options in variants:
        buffer = io.BytesIO()
        image.save(buffer, format={".jpg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix[1:].upper()), **options)
        seeds.append((suffix, buffer.getvalue()))
    with tempfile.TemporaryDirectory() as folder:
        for suffix, bomb in ((".png", png_bomb), (".tif", tiff_bomb), (".gif", gif_bomb)):
            seeds.append((suffix, bomb(Path(folder) / f"bomb{suffix}", 9000, 9000).read_bytes()))
    return seeds


def image_worker(seed: int) -> None:
    """Decode mutated images for case numbers read from stdin, one outcome line each."""
    from retrain.data.decode import UnreadableImage, load_rgb
    seeds = seed_images()
    work = Path(tempfile.mkdtemp(prefix="fuzz-image-"))

    def run(case: int) -> str:
        rng = np.random.default_rng([seed, case])
        suffix, data = seeds[rng.integers(len(seeds))]
        path = work / f"case{suffix}"
        path.write_bytes(mutate(data, rng))
        try:
            load_rgb(path, 224, 224)
            return "decoded"
        except UnreadableImage:
            return "skipped"
    _serve(run)


def model_worker(seed: int) -> None:
    """Load mutated graphs and labels files with ``GraphLabeler`` and label one image with each."""
    from retrain.errors import UserError
    from retrain.label.labeler import GraphLabeler
    from tests.conftest import TINY_SIZE, make_image
    from tests.hostile_files import graph_writing_file
    work = Path(tempfile.mkdtemp(prefix="fuzz-model-"))
    os.chdir(work)  # the side-effect graph names a relative file: the same bytes in every run, never the project's
    graphs = _seed_graphs(work)
    graphs.append(graph_writing_file(Path("written.txt"), TINY_SIZE, 3))
    image = make_image(work / "photo.jpg", (200, 40, 40), seed=0)
    labels = b"blue\ngreen\nred\n"
    flags = dict(input_height=TINY_SIZE, input_width=TINY_SIZE, input_mean=127.5, input_std=127.5)

    def run(case: int) -> str:
        rng = np.random.default_rng([seed, case])
        graph_def = graphs[rng.integers(len(graphs))]
        mutate_labels = rng.random() < 0.2
        graph_bytes = _serialized(graph_def) if mutate_labels else _mutate_graph(graph_def, rng)
        (work / "graph.pb").write_bytes(graph_bytes)
        (work / "labels.txt").write_bytes(mutate(labels, rng) if mutate_labels else labels)
        try:
            labeler = GraphLabeler(work / "graph.pb", work / "labels.txt", **flags)
            list(labeler.predict_files([image]))
            return "labelled"
        except UserError:
            return "refused"
    _serve(run)


def _seed_graphs(work: Path) -> list:
    """Our exported tiny graph and a Poets-style retrained graph (batch 1 baked in), as GraphDefs."""
    from retrain.export.frozen_graph import export_frozen_graph
    from retrain.models.backbones import load_backbone, load_graph_def
    from retrain.training.head import Head
    from tests.conftest import TINY_FEATURES, tiny_graph_def, tiny_spec
    from tests.test_poets_graph import write_poets_graph
    model_dir = work / "models"
    (model_dir / "tiny_v1").mkdir(parents=True)
    (model_dir / "tiny_v1" / "frozen_graph.pb").write_bytes(tiny_graph_def().SerializeToString())
    rng = np.random.default_rng(0)
    head = Head.linear(rng.normal(0, 1, (TINY_FEATURES, 3)).astype(np.float32), np.zeros(3, np.float32))
    export_frozen_graph(load_backbone(tiny_spec(), model_dir), head, work / "ours.pb")
    write_poets_graph(work / "poets.pb", head, reshape_to_batch_1=True)
    return [load_graph_def(work / "ours.pb"), load_graph_def(work / "poets.pb")]


def _mutate_graph(graph_def, rng: np.random.Generator) -> bytes:
    """Half the time a byte-level mutation; otherwise a change to one node: op, attribute, input or tensor."""
    if rng.random() < 0.5:
        return mutate(_serialized(graph_def), rng)
    from retrain.models.graph_check import PURE_OPS
    graph_def = type(graph_def).FromString(graph_def.SerializeToString())
    nodes = graph_def.node
    node = nodes[int(rng.integers(len(nodes)))]
    change = rng.integers(6)
    if change == 0:
        node.op = str(rng.choice(sorted(PURE_OPS) + ["WriteFile", "ReadFile", "PyFunc", "PrintV2", "NoSuchOp"]))
    elif change == 1 and node.attr:
        del node.attr[str(rng.choice(sorted(node.attr)))]
    elif change == 2 and node.input:
        other = nodes[int(rng.integers(len(nodes)))].name
        node.input[int(rng.integers(len(node.input)))] = f"{other}:{int(rng.choice([0, 1, 7]))}"
    elif change == 3:
        for value in node.attr.values():
            if value.HasField("shape"):
                for dim in value.shape.dim:
                    dim.size = int(rng.choice([-1, 0, 1, 3, 1 << 20, 1 << 40]))
            if value.HasField("type"):
                value.type = int(rng.integers(1, 24))
    elif change == 4:
        for value in node.attr.values():
            if value.HasField("tensor") and value.tensor.tensor_content:
                value.tensor.tensor_content = mutate(value.tensor.tensor_content, rng)
    else:
        del nodes[int(rng.integers(len(nodes)))]
    return _serialized(graph_def)


def _serialized(graph_def) -> bytes:
    """Bytes that are the same in every process: protobuf orders map fields (node attributes) arbitrarily
    otherwise, so a byte-level mutation would hit other bytes from run to run."""
    return graph_def.SerializeToString(deterministic=True)


def _serve(run_case) -> None:
    """Worker loop: case number in, outcome out; an unexpected exception is reported as a failed outcome."""
    print("ready", flush=True)
    for line in sys.stdin:
        case = int(line)
        try:
            outcome = run_case(case)
        except Exception as error:  # the failures we look for: each would have been a traceback for a user
            outcome = f"traceback: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        print(json.dumps([case, outcome]), flush=True)


class Worker:
    """A worker process of one kind, with its time and memory limits watched from here."""

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed
        self.seconds, self.memory_mb = LIMITS[kind]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fuzz", "--worker", kind, "--seed", str(seed)], cwd=PROJECT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(PROJECT)), stderr=subprocess.DEVNULL)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the {kind} fuzz worker did not start")

    def run(self, case: int) -> str:
        self.process.stdin.write(f"{case}\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if select.select([self.process.stdout], [], [], 0.02)[0]:
                line = self.process.stdout.readline()
                if not line:
                    return f"crash: exit code {self.process.wait()}"
                return json.loads(line)[1]
            if self._resident_mb() > self.memory_mb:
                self.stop()
                return f"over memory: more than {self.memory_mb} MB"
        self.stop()
        return f"hang: more than {self.seconds:g} s"

    def _resident_mb(self) -> float:
        try:
            pages = int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1])
        except (OSError, IndexError):
            return 0.0
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def fuzz(image_cases: int, model_cases: int, seed: int = 0) -> Tally:
    """Run the cases; a worker that crashed, hung or grew too big is replaced for the next case."""
    tally = Tally()
    for kind, count in (("image", image_cases), ("model", model_cases)):
        worker = None
        for case in range(count):
            worker = worker if worker and worker.process.poll() is None else Worker(kind, seed)
            tally.add(kind, case, worker.run(case))
        if worker:
            worker.stop()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_cases", type=int, default=11000)
    parser.add_argument("--model_cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=["image", "model"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        (image_worker if args.worker == "image" else model_worker)(args.seed)
        return 0
    print(machine())
    started = time.monotonic()
    tally = fuzz(args.image_cases, args.model_cases, args.seed)
    for outcome, count in sorted(tally.outcomes.items()):
        print(f"{outcome:>24}: {count}")
    for kind, case, outcome in tally.failures[:20]:
        print(f"failed: {kind} case {case} (--seed {args.seed}): {outcome}")
    total = args.image_cases + args.model_cases
    bad = collections.Counter(outcome.split(":")[0] for _, _, outcome in tally.failures)
    print(f"RESULT fuzz: {total} cases ({args.image_cases} images, {args.model_cases} graphs and labels files) in "
          f"{time.monotonic() - started:.0f} s: {bad['crash']} crashes, {bad['hang']} hangs, {bad['over memory']} "
          f"over memory, {bad['traceback']} tracebacks")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
