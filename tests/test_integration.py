"""The real MobileNet v1 on the real flower photos, through the command line.

This is the README promise: Poets' default flags, at least 85% test accuracy,
a second run that reuses every cached bottleneck, and a graph that any
independent loader reads the same way label_image does.
"""
import json
import re

import numpy as np
import pytest
from PIL import Image, ImageOps

from retrain.data.images import split_images
from tests.conftest import FLOWERS, SHARED_FLOWERS
from tests.test_cli import run_script

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(flowers_retrained):
    return (flowers_retrained.out, flowers_retrained.cold_stdout, flowers_retrained.warm_stdout,
            flowers_retrained.cold_seconds, flowers_retrained.warm_seconds)


@pytest.mark.skipif(FLOWERS != SHARED_FLOWERS, reason="the 85% promise is about the 600 shared flower photos; the 13 "
                    "test images of the 100 bundled ones are too few to measure it (they give 11 of 13)")
def test_default_flags_reach_85_percent_test_accuracy(trained):
    _, cold, _, _, _ = trained
    accuracy = float(re.search(r"Final test accuracy = ([\d.]+)%", cold).group(1))
    assert accuracy >= 85.0


def test_second_run_reuses_every_cached_bottleneck(trained):
    _, cold, warm, cold_seconds, warm_seconds = trained
    total = len(list(p for p in FLOWERS.rglob("*") if p.is_file()))
    assert re.search(r"Bottlenecks: 0 of \d+ images found in the cache", cold)
    assert f"Bottlenecks: {total} of {total} images found in the cache" in warm and ", 0 to compute" in warm
    print(f"cold {cold_seconds:.1f}s, warm {warm_seconds:.1f}s")


def independent_top1(graph_path, info, paths):
    """Plain TF1-style consumer with its own image decoding: no code from retrain."""
    import tensorflow as tf
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    size = (info["input_width"], info["input_height"])
    results = []
    with tf.compat.v1.Session(graph=graph) as session:
        for path in paths:
            with Image.open(path) as image:
                image.draft("RGB", (size[0] * 2, size[1] * 2))
                pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB").resize(size, Image.BILINEAR),
                                    np.float32)
            normalised = (pixels - info["input_mean"]) / info["input_std"]
            scores = session.run("final_result:0", {"input:0": normalised[None]})
            results.append(int(np.argmax(scores[0])))
    return results


def test_independent_loader_agrees_with_label_image_on_every_test_image(trained):
    out, _, _, _, _ = trained
    test_paths = [r.path for r in split_images(FLOWERS, 10, 10) if r.split == "test"]
    labels = (out / "labels.txt").read_text().split("\n")[:-1]
    info = json.loads((out / "graph.json").read_text())
    result = run_script("scripts.label_image", "--graph", str(out / "graph.pb"), "--labels", str(out / "labels.txt"),
                        "--top_k", "1", "--image", *map(str, test_paths))
    assert result.returncode == 0, result.stderr[-2000:]
    # each image: its name and its top label; an image over the unknown threshold has one more line saying so
    lines = [line for line in result.stdout.splitlines() if not line.startswith("none of the labels")]
    from_cli = [lines[i + 1].rsplit(" ", 1)[0] for i in range(0, len(lines), 2)]
    independent = [labels[i] for i in independent_top1(out / "graph.pb", info, test_paths)]
    assert len(from_cli) == len(test_paths) and from_cli == independent
