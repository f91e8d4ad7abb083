"""One training step of the head as TensorFlow ops: forward pass and hand-written back-propagation.

The head is small (Dense+ReLU layers, then a softmax), and TensorFlow's cost
here is per op, not per FLOP: written out by hand, back-propagation is a few
ops per layer, the fused cross-entropy op yields ``softmax - labels``
directly, and the default head (one layer, no dropout, no smoothing, no class
weights) builds exactly the ops of Poets' loop, so seeded runs stay
bit-identical to it. Without dropout the forward pass is ``head.dense_logits``,
the one export uses (a test holds them equal).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class StepOptions:
    """What shapes the loss and its gradient, beyond the layers themselves."""
    # Fraction of the softmax layer's inputs zeroed during training: the pooled features of a linear head (as in
    # Keras' transfer-learning guide), the hidden units of a deeper one (the Dense+Dropout heads of the tutorials).
    dropout: float = 0.0
    label_smoothing: float = 0.0
    class_weights: np.ndarray | None = None  # [C] loss weight per class, None for all 1


def seeded_generator(seed: int | None):
    """The ``tf.random.Generator`` a training stage draws from: seeded for reproducible runs, else fresh."""
    import tensorflow as tf
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed)


def head_step(layers: Sequence[tuple], features, labels, options: StepOptions, gradient_scale, generator=None,
              feature_gradient: bool = False):
    """The logits, the gradient of every variable (``[dW0, db0, dW1, db1, ...]``) and of the features for one batch.

    Args:
        layers: the head's ``(weights, biases)`` variables, softmax layer last.
        features: the batch's input features, float32 ``[N, D]``.
        labels: the batch's class indices, int32 ``[N]``.
        options: dropout, label smoothing and class weights.
        gradient_scale: multiplies the loss gradient before back-propagation: ``1 / batch size`` gives the batch
            mean's gradient, and plain SGD folds its learning rate in as well.
        generator: a ``tf.random.Generator`` that draws dropout masks.
        feature_gradient: also back-propagate to ``features`` (fine-tuning carries it on into the top blocks).

    Returns:
        ``(logits, gradients, gradient w.r.t. features or None)``. Variables are read, never written.
    """
    import tensorflow as tf
    inputs, activations, mask = [], features, None
    for index, (weights, biases) in enumerate(layers):
        if index == len(layers) - 1 and options.dropout > 0:
            keep = generator.uniform(tf.shape(activations)) >= options.dropout
            mask = tf.cast(keep, tf.float32) / (1.0 - options.dropout)  # inverted dropout: no rescaling at inference
            activations = activations * mask
        inputs.append(activations)
        activations = tf.matmul(activations, weights) + biases
        if index < len(layers) - 1:
            activations = tf.nn.relu(activations)
    logits = activations

    num_classes = layers[-1][1].shape[0]
    if options.label_smoothing > 0:
        targets = (tf.one_hot(labels, num_classes) * (1.0 - options.label_smoothing)
                   + options.label_smoothing / num_classes)
        _, gradient = tf.raw_ops.SoftmaxCrossEntropyWithLogits(features=logits, labels=targets)
    else:
        _, gradient = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=labels)
    if options.class_weights is not None:
        gradient = gradient * tf.gather(tf.constant(options.class_weights, tf.float32), labels)[:, tf.newaxis]
    gradient = gradient * gradient_scale

    gradients = []
    for index in range(len(layers) - 1, -1, -1):
        weights, _ = layers[index]
        gradients[:0] = [tf.matmul(inputs[index], gradient, transpose_a=True), tf.reduce_sum(gradient, 0)]
        if index > 0 or feature_gradient:
            gradient = tf.matmul(gradient, weights, transpose_b=True)
            if index == len(layers) - 1 and mask is not None:
                gradient = gradient * mask
            if index > 0:  # inputs[index] is ReLU's output (times the mask, positive where it kept a value)
                gradient = gradient * tf.cast(inputs[index] > 0, tf.float32)
    return logits, gradients, gradient if feature_gradient else None
