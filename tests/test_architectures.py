"""Registry rows are right: feature sizes as TF-slim builds them, aliases share a cache, ids fixed before loading."""
import dataclasses

import numpy as np

from retrain.models.architectures import ARCHITECTURES, get_architecture, tfhub_spec
from retrain.models.backbones import load_backbone
from tests.test_backbones import save_tiny_hub_module


def slim_mobilenet_v2_graph_def(width: float):
    """A tiny graph shaped like TF-slim's MobileNet v2 at ``width``: its input, its pooled-feature name and size.

    TF-slim scales the last 1x1 convolution's 1280 channels by the width
    (``make_divisible(1280 * 1.3, 8)`` = 1664 at 1.3); the layers in between
    only shrink the image here, so the graph builds and runs in a second.
    """
    import tensorflow as tf
    channels = {1.3: 1664, 1.4: 1792}[width]
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, 224, 224, 3], name="input")
        stem = tf.nn.relu6(tf.nn.conv2d(images, rng.normal(0, 0.3, (8, 8, 3, 8)).astype(np.float32), 8, "VALID"))
        last = tf.nn.relu6(tf.nn.conv2d(stem, rng.normal(0, 0.3, (1, 1, 8, channels)).astype(np.float32), 1, "VALID"))
        with tf.name_scope("MobilenetV2/Logits"):
            tf.nn.avg_pool2d(last, 28, 1, "VALID", name="AvgPool")
    return graph.as_graph_def()


def test_mobilenet_v2_1_3_row_loads_its_1664_d_graph(tmp_path):
    spec = get_architecture("mobilenet_v2_1.3_224")
    assert spec.feature_size == 1664
    target = tmp_path / spec.model_file
    target.parent.mkdir(parents=True)
    target.write_bytes(slim_mobilenet_v2_graph_def(1.3).SerializeToString())
    backbone = load_backbone(spec, tmp_path)  # refuses a graph whose features differ from the registry's size
    assert backbone.feature_size == 1664
    assert backbone(np.zeros((2, 224, 224, 3), np.uint8)).shape == (2, 1664)


def test_list_architectures_shows_the_1664_d_row_and_the_alias():
    from tests.test_cli import run_script
    result = run_script("scripts.retrain", "--list_architectures")
    assert result.returncode == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "1664-d" in rows["mobilenet_v2_1.3_224"]
    assert "1792-d" in rows["mobilenetv2"] and "(= mobilenet_v2_1.4_224)" in rows["mobilenetv2"]


def test_an_alias_shares_its_targets_cache():
    assert ARCHITECTURES["mobilenetv2"].cache_id == ARCHITECTURES["mobilenet_v2_1.4_224"].cache_id
    ids = [spec.cache_id for name, spec in ARCHITECTURES.items() if not spec.alias_of]
    assert len(set(ids)) == len(ids)  # every other row has a cache of its own


def test_downloads_use_https():
    assert all(spec.url.startswith("https://") for spec in ARCHITECTURES.values())


def test_a_tfhub_specs_cache_id_is_the_same_before_and_after_loading(tmp_path):
    folder = tmp_path / "hub"
    save_tiny_hub_module(folder)
    spec = tfhub_spec(str(folder), 16)
    before = spec.cache_id
    backbone = load_backbone(spec, tmp_path / "models")
    assert backbone.spec.cache_id == before and backbone.feature_size > 0


def test_the_cache_id_names_what_decides_the_vectors_not_where_they_are_downloaded_from():
    spec = ARCHITECTURES["mobilenet_1.0_224"]
    assert dataclasses.replace(spec, url="https://mirror.example/x.tgz").cache_id == spec.cache_id
    assert dataclasses.replace(spec, input_mean=0.0).cache_id != spec.cache_id
    assert dataclasses.replace(spec, feature_tensor="Other:0").cache_id != spec.cache_id
