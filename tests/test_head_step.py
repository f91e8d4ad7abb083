"""The hand-written back-propagation and update rules agree with TensorFlow's own gradients."""
import numpy as np
import pytest

from retrain.training.head import dense_logits
from retrain.training.head_step import StepOptions, head_step
from retrain.training.optimizers import Optimizer, learning_rate_at

tf = pytest.importorskip("tensorflow")


def _layers(rng, sizes):
    return [(tf.Variable(rng.normal(0, 0.5, (a, b)).astype(np.float32)),
             tf.Variable(rng.normal(0, 0.1, b).astype(np.float32))) for a, b in zip(sizes[:-1], sizes[1:])]


def _reference_gradients(layers, features, labels, options, scale, generator):
    """The same loss written the plain way, differentiated by GradientTape (same dropout draws); the features'
    gradient last."""
    variables = [v for layer in layers for v in layer]
    with tf.GradientTape() as tape:
        tape.watch(features)
        activations = features
        for index, (weights, biases) in enumerate(layers):
            if options.dropout > 0 and index == len(layers) - 1:
                keep = generator.uniform(tf.shape(activations)) >= options.dropout
                activations = activations * tf.cast(keep, tf.float32) / (1 - options.dropout)
            activations = activations @ weights + biases
            if index < len(layers) - 1:
                activations = tf.nn.relu(activations)
        classes = layers[-1][1].shape[0]
        targets = tf.one_hot(labels, classes) * (1 - options.label_smoothing) + options.label_smoothing / classes
        losses = tf.nn.softmax_cross_entropy_with_logits(targets, activations)
        if options.class_weights is not None:
            losses = losses * tf.gather(options.class_weights, labels)
        loss = tf.reduce_sum(losses) * scale
    return tape.gradient(loss, [*variables, features])


@pytest.mark.parametrize("sizes, options", [
    ((6, 3), StepOptions()),
    ((6, 5, 3), StepOptions(label_smoothing=0.1, class_weights=np.array([0.5, 1.0, 2.0], np.float32))),
    ((6, 3), StepOptions(dropout=0.5)),
    ((6, 5, 4, 3), StepOptions(dropout=0.4)),
])
def test_hand_written_gradients_match_gradient_tape(sizes, options):
    rng = np.random.default_rng(0)
    layers = _layers(rng, sizes)
    features = tf.constant(rng.normal(0, 1, (16, sizes[0])).astype(np.float32))
    labels = tf.constant(rng.integers(0, sizes[-1], 16).astype(np.int32))
    _, ours, feature_gradient = head_step(layers, features, labels, options, 1 / 16,
                                          tf.random.Generator.from_seed(5), feature_gradient=True)
    theirs = _reference_gradients(layers, features, labels, options, 1 / 16, tf.random.Generator.from_seed(5))
    assert len(ours) + 1 == len(theirs) == 2 * len(layers) + 1
    for mine, reference in zip([*ours, feature_gradient], theirs):
        np.testing.assert_allclose(mine.numpy(), reference.numpy(), rtol=1e-4, atol=1e-6)


def test_training_forward_pass_is_the_exported_one():
    """Without dropout, the logits trained on are the ones ``dense_logits`` (export) computes."""
    rng = np.random.default_rng(1)
    layers = _layers(rng, (6, 5, 3))
    features = tf.constant(rng.normal(0, 1, (4, 6)).astype(np.float32))
    logits, _, none = head_step(layers, features, tf.constant([0, 1, 2, 0]), StepOptions(), 0.25)
    assert none is None
    np.testing.assert_array_equal(logits.numpy(), dense_logits(features, layers).numpy())


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_optimizers_match_keras_on_a_quadratic(name):
    """A few steps on sum(x^2) land where Keras' own optimizer lands (same hyper-parameters)."""
    import keras
    start = np.array([1.0, -2.0, 0.5], np.float32)
    ours = tf.Variable(start)
    optimizer = Optimizer(name, [ours], [False], weight_decay=0.0)
    theirs = tf.Variable(start)
    reference = {"sgd": keras.optimizers.SGD(0.1), "momentum": keras.optimizers.SGD(0.1, momentum=0.9),
                 "adam": keras.optimizers.Adam(0.1)}[name]
    for step in range(5):
        gradient = 2 * ours
        optimizer.updates([0.1 * gradient if optimizer.folds_learning_rate else gradient], 0.1, step)
        reference.apply_gradients([(2 * theirs, theirs)])
    # atol: float32 rounding on the scale of the start (Adam's fused kernel rounds differently from Keras' ops)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_weight_decay_shrinks_only_decayed_variables():
    weights, biases = tf.Variable([1.0, 1.0]), tf.Variable([1.0])
    Optimizer("sgd", [weights, biases], [True, False], weight_decay=0.5).updates(
        [tf.zeros(2), tf.zeros(1)], 0.1, 0)
    np.testing.assert_allclose(weights.numpy(), [0.95, 0.95])
    np.testing.assert_allclose(biases.numpy(), [1.0])


def test_cosine_schedule_falls_from_the_base_rate_to_zero():
    rates = [float(learning_rate_at(0.2, "cosine", step, 100)) for step in (0, 50, 100)]
    np.testing.assert_allclose(rates, [0.2, 0.1, 0.0], atol=1e-7)
    assert float(learning_rate_at(0.2, "constant", 100, 100)) == pytest.approx(0.2)
