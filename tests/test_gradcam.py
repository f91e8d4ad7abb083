"""Grad-CAM passes Adebayo et al.'s sanity checks: it points at the evidence, and it depends on the model."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.data.decode import load_rgb
from retrain.errors import UserError
from retrain.explain.gradcam import GradCam, explain_files, overlay
from retrain.export.frozen_graph import export_frozen_graph, sidecar_for, write_labels
from retrain.graph_contract import Sidecar
from retrain.label.labeler import resolve_graph_config
from retrain.models.backbones import load_backbone
from retrain.training.batches import in_memory_batches
from retrain.training.head import Head, TrainingConfig, train_head
from tests.conftest import CLASS_COLOURS, TINY_FEATURES, TINY_SIZE, tiny_spec
from tests.hostile_files import graph_writing_file
from tests.test_poets_graph import poets_graph  # noqa: F401 (module-scoped fixture)

LABELS = sorted(CLASS_COLOURS)
HALF = TINY_SIZE // 2
QUADRANTS = [(0, 0), (0, HALF), (HALF, 0), (HALF, HALF)]  # (top, left) of each quadrant


def patch_image(patches: dict[int, str], seed: int) -> np.ndarray:
    """Grey noise with a patch of a class's colour filling each given quadrant: that class's evidence."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(128, 40, (TINY_SIZE, TINY_SIZE, 3))
    for quadrant, label in patches.items():
        top, left = QUADRANTS[quadrant]
        pixels[top:top + HALF, left:left + HALF] = np.array(CLASS_COLOURS[label]) + rng.normal(0, 20, (HALF, HALF, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def three_patch_images(count: int, seed: int) -> tuple[np.ndarray, list[int], list[int]]:
    """Images holding all three classes' patches in random quadrants; one class to explain per image."""
    rng = np.random.default_rng(seed)
    images, classes, quadrants = [], [], []
    for i in range(count):
        places = rng.permutation(4)[:3]
        images.append(patch_image(dict(zip(places.tolist(), LABELS)), seed=seed + i))
        classes.append(i % 3)
        quadrants.append(int(places[i % 3]))
    return np.stack(images), classes, quadrants


def export(root: Path, backbone, head: Head) -> Path:
    graph = root / "graph.pb"
    export_frozen_graph(backbone, head, graph)
    write_labels(LABELS, root / "labels.txt")
    sidecar_for(backbone, LABELS).write(graph)
    return graph


def downsampling_graph_def(seed: int = 0, features: int = TINY_FEATURES):
    """Like a real CNN, only tiny: conv, pool 4x4, 1x1 conv (the last conv layer, 8x8), global average pool."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, TINY_SIZE, TINY_SIZE, 3], name="input")
        kernel = tf.constant(rng.normal(0, 0.5, (3, 3, 3, features)).astype(np.float32))
        pooled = tf.nn.avg_pool2d(tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")), 4, 4, "VALID")
        mixing = tf.constant(rng.normal(0, 0.5, (1, 1, features, features)).astype(np.float32))
        last = tf.nn.relu(tf.nn.conv2d(pooled, mixing, 1, "SAME"), name="LastConv")
        with tf.name_scope("Tiny"):
            tf.nn.avg_pool2d(last, TINY_SIZE // 4, 1, "VALID", name="AvgPool")
    return graph.as_graph_def()


@pytest.fixture(scope="module")
def patch_classifier(tmp_path_factory):
    """A tiny CNN with a head trained on single-patch images; (backbone, head, exported graph)."""
    root = tmp_path_factory.mktemp("gradcam")
    (root / "models" / "tiny_v1").mkdir(parents=True)
    (root / "models" / "tiny_v1" / "frozen_graph.pb").write_bytes(downsampling_graph_def().SerializeToString())
    backbone = load_backbone(tiny_spec(), root / "models")
    truths = np.arange(60) % len(LABELS)
    images = np.stack([patch_image({i % 4: LABELS[t]}, seed=i) for i, t in enumerate(truths)])
    config = TrainingConfig(steps=500, learning_rate=1.0, train_batch_size=-1, seed=0)
    head = train_head(in_memory_batches(backbone(images), truths.astype(np.int32)), TINY_FEATURES, len(LABELS), config)
    return backbone, head, export(root, backbone, head)


def gradcam_for(graph: Path, layer=None) -> GradCam:
    config = resolve_graph_config(graph)
    return GradCam(graph, config, layer)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the values' ranks, ties given their mean rank."""
    def ranks(x):
        values, inverse = np.unique(x.ravel(), return_inverse=True)
        order = np.empty(x.size)
        order[np.argsort(x.ravel(), kind="stable")] = np.arange(x.size)
        return (np.bincount(inverse, order) / np.bincount(inverse))[inverse]
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def quadrant_of_peak(cam: np.ndarray) -> int:
    row, column = np.unravel_index(np.argmax(cam), cam.shape)
    return 2 * int(row >= cam.shape[0] / 2) + int(column >= cam.shape[1] / 2)


def test_the_map_peaks_in_the_quadrant_holding_the_evidence(patch_classifier):
    backbone, head, graph = patch_classifier
    gradcam = gradcam_for(graph)
    assert gradcam.layer.endswith("/LastConv:0")  # found by walking back from final_result
    images, classes, quadrants = [], [], []
    for i in range(12):
        label, quadrant = LABELS[i % 3], (i * 7) % 4
        images.append(patch_image({quadrant: label}, seed=1000 + i))
        classes.append(LABELS.index(label))
        quadrants.append(quadrant)
    images = np.stack(images)
    assert (head.predict_proba(backbone(images)).argmax(1) == classes).all()
    cams = gradcam.maps(images, classes)  # one batch
    assert cams.shape == (12, TINY_SIZE // 4, TINY_SIZE // 4) and cams.min() >= 0 and cams.max() == pytest.approx(1)
    assert [quadrant_of_peak(cam) for cam in cams] == quadrants
    one_by_one = np.concatenate([gradcam.maps(images[i:i + 1], classes[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(cams[:3], one_by_one, atol=1e-5)


def test_each_class_map_peaks_on_its_own_evidence(patch_classifier):
    images, classes, quadrants = three_patch_images(12, seed=3000)
    cams = gradcam_for(patch_classifier[2]).maps(images, classes)
    assert [quadrant_of_peak(cam) for cam in cams] == quadrants


def test_randomising_the_head_changes_the_map(patch_classifier, tmp_path):
    backbone, head, graph = patch_classifier
    images, classes, _ = three_patch_images(12, seed=2000)
    trained = gradcam_for(graph).maps(images, classes)
    rng = np.random.default_rng(0)
    correlations = []
    for trial in range(3):
        trained_layer = head.layers[-1]
        random_head = Head.linear(rng.normal(0, trained_layer.weights.std(), trained_layer.weights.shape)
                                  .astype(np.float32), trained_layer.biases)
        randomised = gradcam_for(export(tmp_path / str(trial), backbone, random_head)).maps(images, classes)
        # A map the random head leaves empty keeps nothing of the original: count it as no correlation.
        correlations += [rank_correlation(a, b) if b.any() else 0.0 for a, b in zip(trained, randomised)]
    print(f"rank correlations with randomised heads: median {np.median(correlations):.2f}")
    assert np.median(correlations) < 0.5, correlations


def test_layers_are_found_by_suffix_and_bad_ones_refused(patch_classifier):
    _, _, graph = patch_classifier
    assert gradcam_for(graph, "LastConv").layer == gradcam_for(graph).layer
    with pytest.raises(UserError, match="^gradcam_layer=NoSuchLayer:0 is not a tensor of"):
        gradcam_for(graph, "NoSuchLayer")
    with pytest.raises(UserError, match="not \\[batch, height, width, channels\\]"):
        gradcam_for(graph, "final_logits")


def test_overlays_keep_the_photo_size(patch_classifier, tmp_path):
    _, _, graph = patch_classifier
    path = tmp_path / "photo.png"
    Image.fromarray(np.repeat(np.repeat(patch_image({3: "red"}, seed=5), 3, axis=0), 2, axis=1)).save(path)
    full, small = explain_files(gradcam_for(graph), [path, path], [LABELS.index("red")] * 2, max_side=None), \
        explain_files(gradcam_for(graph), [path], [LABELS.index("red")], max_side=32)
    assert full[0].size == (2 * TINY_SIZE, 3 * TINY_SIZE) and small[0].size == (21, 32)
    hot = overlay(Image.new("RGB", (4, 4), "white"), np.ones((2, 2), np.float32))
    assert np.asarray(hot)[0, 0, 0] > np.asarray(hot)[0, 0, 2]  # the hottest colour is red


def test_poets_graphs_get_the_same_maps_batched_or_not(poets_graph, image_dir):  # noqa: F811
    graph, _, _ = poets_graph
    config = resolve_graph_config(graph, input_height=TINY_SIZE, input_width=TINY_SIZE, input_mean=127.5,
                                     input_std=127.5)
    gradcam = GradCam(graph, config)
    assert gradcam.layer == "Relu:0"  # the tiny backbone's convolution, found without a sidecar
    images = np.stack([load_rgb(path, TINY_SIZE, TINY_SIZE) for path in sorted(image_dir.rglob("*.jpg"))[:5]])
    batched = gradcam.maps(images, [0, 1, 2, 0, 1])
    one_by_one = np.concatenate([gradcam.maps(images[i:i + 1], [[0, 1, 2, 0, 1][i]]) for i in range(5)])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.max() == pytest.approx(1)


def test_a_graph_that_does_more_than_compute_is_refused_before_it_runs(tmp_path):
    evil = tmp_path / "evil.pb"
    evil.write_bytes(graph_writing_file(tmp_path / "written").SerializeToString())
    with pytest.raises(UserError, match=r"evil\.pb contains op WriteFile \(node SideEffect\).*pass trust_graph=True$"):
        GradCam(evil, Sidecar(input_height=TINY_SIZE, input_width=TINY_SIZE))
    assert not (tmp_path / "written").exists()
