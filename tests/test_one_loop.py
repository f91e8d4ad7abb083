"""One training loop: stage two of fine-tuning honours every head option, with the head's step and optimiser.

Each option is checked in stage two itself (the head is given, stage one does not run): the gradient of one
batch against the same loss written the plain way and differentiated by TensorFlow (which must differ without
the option), and fine-tuning's result, which must change when the option is set.
"""
import numpy as np
import pytest

from retrain.export.frozen_graph import export_frozen_graph
from retrain.models.backbones import load_backbone
from retrain.models.cut import cut_backbone
from retrain.training.finetune import FineTuneConfig, fine_tune, stage_two_gradients, trainer
from retrain.training.head import DenseLayer, Head, TrainingConfig
from retrain.training.head_step import StepOptions
from tests.conftest import TINY_SIZE
from tests.tiny_blocks import tiny_blocks_model_dir, tiny_blocks_spec

tf = pytest.importorskip("tensorflow")

CLASSES = 3
SEED = 4
OPTIONS = {  # each head option in stage two, as TrainingConfig spells it and as the step sees it
    "dropout": ({"dropout": 0.5}, StepOptions(dropout=0.5)),
    "label_smoothing": ({"label_smoothing": 0.2}, StepOptions(label_smoothing=0.2)),
    "class_weight": ({"class_weight": "balanced"}, StepOptions(class_weights=np.array([0.5, 1.0, 2.0], np.float32))),
}


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    model_dir = tiny_blocks_model_dir(tmp_path_factory.mktemp("models"))
    return cut_backbone(load_backbone(tiny_blocks_spec(), model_dir), 2, model_dir)


def _rows(cut, count: int = 21):
    images = np.random.default_rng(7).integers(0, 256, (count, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    # imbalanced on purpose (12, 6, 3 rows): balanced class weights are 7/12, 7/6, 7/3
    return cut.lower(images).astype(np.float16), np.repeat(np.arange(CLASSES), [12, 6, 3]).astype(np.int32)


def _head(sizes=(8, CLASSES)) -> Head:
    rng = np.random.default_rng(1)
    return Head([DenseLayer(rng.normal(0, 0.5, (a, b)).astype(np.float32), rng.normal(0, 0.1, b).astype(np.float32))
                 for a, b in zip(sizes[:-1], sizes[1:])])


def _reference_gradients(cut, layers, batch, labels, options: StepOptions):
    """The same loss written the plain way (masks from the same seed), differentiated by tf.gradients."""
    generator = tf.random.Generator.from_seed(SEED)

    @tf.function(autograph=False)
    def gradients(batch, labels):
        activations = cut.top.features(batch)
        for index, (weights, biases) in enumerate(layers):
            if index == len(layers) - 1 and options.dropout > 0:
                keep = generator.uniform(tf.shape(activations)) >= options.dropout
                activations = activations * tf.cast(keep, tf.float32) / (1 - options.dropout)
            activations = activations @ weights + biases
            if index < len(layers) - 1:
                activations = tf.nn.relu(activations)
        smoothing = options.label_smoothing
        targets = tf.one_hot(labels, CLASSES) * (1 - smoothing) + smoothing / CLASSES
        losses = tf.nn.softmax_cross_entropy_with_logits(targets, activations)
        if options.class_weights is not None:
            losses = losses * tf.gather(options.class_weights, labels)
        return tf.gradients(tf.reduce_mean(losses), [*cut.top.variables, *(v for layer in layers for v in layer)])
    return [gradient.numpy() for gradient in gradients(tf.constant(batch), tf.constant(labels))]


def _stage_two_gradients(cut, layers, batch, labels, options: StepOptions):
    generator = tf.random.Generator.from_seed(SEED)

    @tf.function(autograph=False)
    def gradients(batch, labels):
        return stage_two_gradients(cut.top, layers, batch, labels, options, generator)[1]
    return [gradient.numpy() for gradient in gradients(tf.constant(batch), tf.constant(labels))]


def _close(ours, theirs) -> bool:
    return all(np.allclose(mine, reference, rtol=1e-3, atol=1e-6) for mine, reference in zip(ours, theirs))


@pytest.mark.parametrize("option, sizes", [*((option, (8, CLASSES)) for option in OPTIONS),
                                           ("all", (8, CLASSES)), ("all", (8, 5, CLASSES))])
def test_stage_twos_gradient_is_the_heads_loss_with_each_option(cut, option, sizes):
    rows, labels = _rows(cut)
    if option == "all":
        options = StepOptions(0.5, 0.2, OPTIONS["class_weight"][1].class_weights)
    else:
        options = OPTIONS[option][1]
    layers = [(tf.Variable(layer.weights), tf.Variable(layer.biases)) for layer in _head(sizes).layers]
    ours = _stage_two_gradients(cut, layers, rows, labels, options)
    assert len(ours) == len(cut.top.variables) + 2 * len(layers)
    assert _close(ours, _reference_gradients(cut, layers, rows, labels, options))
    # ignoring the option would give another gradient
    assert not _close(ours, _reference_gradients(cut, layers, rows, labels, StepOptions()))


def _tuned(cut, rows, labels, seed: int = 0, **head_options) -> list[np.ndarray]:
    """Every top-block and head weight after a few stage-two steps from the same start."""
    original = [variable.numpy() for variable in cut.top.variables]
    head = fine_tune(cut.top, _head(), rows, labels, FineTuneConfig(2, 1e-2, 4, 8), seed, log=lambda _: None,
                     head_config=TrainingConfig(seed=seed, **head_options))
    tuned = [variable.numpy() for variable in cut.top.variables]
    for variable, value in zip(cut.top.variables, original):
        variable.assign(value)
    return tuned + [array for layer in head.layers for array in (layer.weights, layer.biases)]


@pytest.mark.parametrize("option", [*OPTIONS, "weight_decay"])
def test_fine_tuning_passes_each_head_option_to_stage_two(cut, option):
    rows, labels = _rows(cut)
    head_options = OPTIONS[option][0] if option in OPTIONS else {"weight_decay": 0.5}
    plain, again, optioned = (_tuned(cut, rows, labels), _tuned(cut, rows, labels),
                              _tuned(cut, rows, labels, **head_options))
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))
    assert not all(np.array_equal(a, b) for a, b in zip(plain, optioned))


def _one_step(cut, rows, labels, options: StepOptions, weight_decay: float, seed: int, rate: float = 1e-2):
    """Every top-block and head weight after one stage-two step on all ``rows`` (the top is restored after)."""
    original = [variable.numpy() for variable in cut.top.variables]
    training = trainer(cut.top, _head(), rows.shape[1], rows.dtype, FineTuneConfig(2, rate, 1, 8), 1, options,
                       weight_decay, seed)
    training.step(rows, labels)
    tuned = [variable.numpy() for variable in cut.top.variables]
    for variable, value in zip(cut.top.variables, original):
        variable.assign(value)
    return tuned + [array for layer in training.head().layers for array in (layer.weights, layer.biases)]


def test_dropout_in_stage_two_draws_its_masks_from_the_seed(cut):
    rows, labels = _rows(cut)
    dropout = StepOptions(dropout=0.5)
    first, again, second = (_one_step(cut, rows, labels, dropout, 0.0, seed) for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    # without dropout nothing in the step is random
    plain = [_one_step(cut, rows, labels, StepOptions(), 0.0, seed) for seed in (1, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(*plain))


def test_weight_decay_in_stage_two_shrinks_kernels_and_head_weights_not_biases_or_batch_norm(cut):
    """One step: the decoupled decay is ``rate * weight_decay * weight`` on top of the same Adam step."""
    rows, labels = _rows(cut)
    rate, decay = 1e-2, 0.5
    plain, decayed = (_one_step(cut, rows, labels, StepOptions(), weight_decay, 0, rate) for weight_decay in (0, decay))
    kinds = [len(variable.shape) > 1 for variable in cut.top.variables]
    assert any(kinds) and not all(kinds)  # conv kernels, and batch-norm scales and offsets
    start = [variable.numpy() for variable in cut.top.variables]
    start += [array for layer in _head().layers for array in (layer.weights, layer.biases)]
    for before, undecayed, shrunk, is_weight in zip(start, plain, decayed, [*kinds, True, False]):
        expected = rate * decay * before if is_weight else np.zeros_like(before)
        np.testing.assert_allclose(undecayed - shrunk, expected, rtol=1e-3, atol=1e-7)


def test_stage_two_with_every_head_option_is_bit_identical_with_the_same_seed(cut, tmp_path):
    rows, labels = _rows(cut)
    options = {"dropout": 0.3, "label_smoothing": 0.1, "class_weight": "balanced", "weight_decay": 1e-2}
    graphs = []
    for run in range(2):
        original = [variable.numpy() for variable in cut.top.variables]
        head = fine_tune(cut.top, _head(), rows, labels, FineTuneConfig(2, 1e-2, 5, 8), 3, log=lambda _: None,
                         head_config=TrainingConfig(seed=3, **options))
        export_frozen_graph(cut.top.tuned_backbone(), head, tmp_path / f"run{run}.pb")
        graphs.append((tmp_path / f"run{run}.pb").read_bytes())
        for variable, value in zip(cut.top.variables, original):
            variable.assign(value)
    assert graphs[0] == graphs[1]
