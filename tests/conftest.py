"""Shared fixtures: tiny generated images and tiny generated backbones.

The tiny backbone is a real frozen GraphDef in TensorFlow-for-Poets' layout
(placeholder ``input`` fixed at batch 1, pooled features), small enough to
build in a second, so unit tests exercise the same code paths as MobileNet.
"""
from __future__ import annotations

import functools
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from retrain.models.architectures import ArchitectureSpec  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
SHARED = PROJECT.parent / "shared"
# The 600 shared flower photos where ../shared is beside the project, else the 100 bundled with it: the
# integration tests run either way.
SHARED_FLOWERS = SHARED / "data" / "flower_photos"
FLOWERS = SHARED_FLOWERS if SHARED_FLOWERS.is_dir() else PROJECT / "examples" / "flower_photos"
TINY_SIZE = 32
TINY_FEATURES = 8
# Distinct base colours make the generated classes separable by a tiny network.
CLASS_COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (50, 60, 210)}


def make_image(path: Path, colour, seed: int, size=(48, 40), fmt=None) -> Path:
    """A noisy image around ``colour``; different seeds give different bytes."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_dataset(root: Path, per_class: int = 12, classes=CLASS_COLOURS) -> Path:
    for c, (label, colour) in enumerate(classes.items()):
        for i in range(per_class):
            make_image(root / label / f"{label}_{i}.jpg", colour, seed=c * 1000 + i)
    return root


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "images")


def tiny_graph_def(seed: int = 0, size: int = TINY_SIZE, features: int = TINY_FEATURES):
    """A frozen conv + average-pool network with Poets' batch-1 ``input`` placeholder."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3], name="input")
        kernel = tf.constant(rng.normal(0, 0.5, (3, 3, 3, features)).astype(np.float32))
        activations = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME"))
        with tf.name_scope("Tiny"):
            tf.nn.avg_pool2d(activations, size, 1, "VALID", name="AvgPool")
    return graph.as_graph_def()


def tiny_tarball(folder: str = "tiny_v1", seed: int = 0) -> bytes:
    data = tiny_graph_def(seed).SerializeToString()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{folder}/frozen_graph.pb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tiny_spec(url: str = "http://127.0.0.1:9/tiny_v1_frozen.tgz", name: str = "tiny", **changes) -> ArchitectureSpec:
    fields = dict(name=name, source="frozen_graph", url=url, model_file="tiny_v1/frozen_graph.pb",
                  archive_member="frozen_graph.pb", input_size=TINY_SIZE, input_mean=127.5, input_std=127.5,
                  feature_tensor="Tiny/AvgPool:0", feature_size=TINY_FEATURES)
    fields.update(changes)
    return ArchitectureSpec(**fields)


def tiny_retrain_options(image_dir: Path, model_dir: Path, work: Path, steps: int = 20):
    """RetrainOptions for the tiny backbone, seeded, with the graph and labels under ``work/out``."""
    from retrain.pipeline import RetrainOptions
    from retrain.training.head import TrainingConfig
    return RetrainOptions(image_dir=str(image_dir), architecture=tiny_spec(), model_dir=str(model_dir),
                          output_graph=str(work / "out" / "g.pb"), output_labels=str(work / "out" / "labels.txt"),
                          summaries_dir=str(work / "logs"), bottleneck_dir=str(work / "bn"),
                          training=TrainingConfig(steps=steps, seed=0))


def write_tiny_model_dir(work: Path) -> Path:
    """``work``/models, a --model_dir that already holds the tiny backbone (the offline case)."""
    model_dir = work / "models"
    target = model_dir / "tiny_v1" / "frozen_graph.pb"
    target.parent.mkdir(parents=True)
    target.write_bytes(tiny_graph_def().SerializeToString())
    return model_dir


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A --model_dir that already holds the tiny backbone (the offline case)."""
    return write_tiny_model_dir(tmp_path)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve a folder on 127.0.0.1; yields (folder, base URL, request log)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FlowersRetrain:
    """Two identical retrains of the real MobileNet on the real flowers, Poets' default flags."""
    out: Path  # graph.pb, graph.json, labels.txt, bottlenecks/
    cold_stdout: str
    warm_stdout: str
    cold_seconds: float
    warm_seconds: float


@pytest.fixture(scope="session")
def flowers_retrained(tmp_path_factory) -> FlowersRetrain:
    """One cold and one warm retrain per test session, shared by every integration test."""
    out = tmp_path_factory.mktemp("flowers")
    command = [sys.executable, "-m", "scripts.retrain", "--image_dir", str(FLOWERS),
               "--output_graph", str(out / "graph.pb"), "--output_labels", str(out / "labels.txt"),
               "--summaries_dir", str(out / "logs"), "--bottleneck_dir", str(out / "bottlenecks")]
    runs = []
    for _ in range(2):
        started = time.monotonic()
        result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=1200,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert result.returncode == 0, result.stderr[-2000:]
        runs.append((result.stdout, time.monotonic() - started))
    return FlowersRetrain(out, runs[0][0], runs[1][0], runs[0][1], runs[1][1])
