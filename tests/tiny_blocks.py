"""A tiny frozen backbone with MobileNet v1's block layout, for fine-tuning tests.

A first convolution ``Conv2d_0`` and three depthwise-separable blocks, each
with TF-slim's unfolded batch-norm (gamma, beta, moving mean and variance as
constants), then an average pool: the same shapes of graph that
``retrain.models.cut`` splits in the real MobileNet, built in a second.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import TINY_SIZE, tiny_spec

TINY_BLOCK_CHANNELS = 8
TINY_BLOCKS = 3
TINY_CUTS = tuple(reversed(["Tiny/Conv2d_0/Relu6:0"] + [f"Tiny/Conv2d_{i}_pointwise/Relu6:0"
                                                        for i in range(1, TINY_BLOCKS)]))


def _batch_norm(tf, rng, scope: str, net, channels: int):
    """Slim's inference batch-norm as a frozen graph has it: constants and arithmetic."""
    def const(name, value):
        return tf.constant(value.astype(np.float32), name=f"{scope}/BatchNorm/{name}")
    gamma = const("gamma", rng.uniform(0.8, 1.2, channels))
    beta = const("beta", rng.normal(0, 0.1, channels))
    mean = const("moving_mean", rng.normal(0, 0.1, channels))
    variance = const("moving_variance", rng.uniform(0.5, 1.5, channels))
    scale = tf.math.rsqrt(variance + 0.001) * gamma
    return net * scale + (beta - mean * scale)


def tiny_blocks_graph_def(seed: int = 0):
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    channels = TINY_BLOCK_CHANNELS
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, TINY_SIZE, TINY_SIZE, 3], name="input")
        kernel = tf.constant(rng.normal(0, 0.5, (3, 3, 3, channels)).astype(np.float32), name="Tiny/Conv2d_0/weights")
        net = tf.nn.relu6(_batch_norm(tf, rng, "Tiny/Conv2d_0", tf.nn.conv2d(images, kernel, 2, "SAME"), channels),
                          name="Tiny/Conv2d_0/Relu6")
        for i in range(1, TINY_BLOCKS + 1):
            scope = f"Tiny/Conv2d_{i}"
            depthwise = tf.constant(rng.normal(0, 0.5, (3, 3, channels, 1)).astype(np.float32),
                                    name=f"{scope}_depthwise/depthwise_weights")
            net = tf.nn.depthwise_conv2d(net, depthwise, [1, 2 if i == 2 else 1, 2 if i == 2 else 1, 1], "SAME")
            net = tf.nn.relu6(_batch_norm(tf, rng, f"{scope}_depthwise", net, channels),
                              name=f"{scope}_depthwise/Relu6")
            pointwise = tf.constant(rng.normal(0, 0.4, (1, 1, channels, channels)).astype(np.float32),
                                    name=f"{scope}_pointwise/weights")
            net = tf.nn.relu6(_batch_norm(tf, rng, f"{scope}_pointwise", tf.nn.conv2d(net, pointwise, 1, "SAME"),
                                          channels), name=f"{scope}_pointwise/Relu6")
        size = int(net.shape[1])
        tf.nn.avg_pool2d(net, size, 1, "VALID", name="Tiny/AvgPool")
    return graph.as_graph_def()


def tiny_blocks_model_dir(root: Path) -> Path:
    """A --model_dir holding the tiny block backbone where ``tiny_blocks_spec`` looks for it."""
    target = root / "tiny_v1" / "frozen_graph.pb"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(tiny_blocks_graph_def().SerializeToString())
    return root


def tiny_blocks_spec(**changes):
    return tiny_spec(**{"name": "tiny_blocks", "feature_size": TINY_BLOCK_CHANNELS, "block_cuts": TINY_CUTS,
                        **changes})
