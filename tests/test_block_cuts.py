"""Block boundaries of the registry rows, and fine-tuning a Keras row."""
from __future__ import annotations

import numpy as np
import pytest

from retrain.models.architectures import INCEPTION_V3_CUTS, RESNET50_CUTS, VGG16_CUTS, get_architecture
from retrain.models.backbones import load_backbone
from retrain.models.cut import cut_backbone
from retrain.training.early_stopping import loss_and_accuracy
from retrain.training.finetune import FineTuneConfig, fine_tune, pooled_features
from retrain.training.head import Head
from tests.conftest import SHARED
from tests.test_finetune import _validation_losses


@pytest.mark.parametrize("constructor, cuts", [("VGG16", VGG16_CUTS), ("ResNet50", RESNET50_CUTS),
                                               ("InceptionV3", INCEPTION_V3_CUTS)])
def test_keras_block_boundaries_are_layers_of_the_model(constructor, cuts):
    """Built with weights=None (the weights cannot be downloaded here): the layer names are the same."""
    import keras
    model = getattr(keras.applications, constructor)(include_top=False, weights=None, pooling="avg")
    names = [layer.name for layer in model.layers]
    positions = [names.index(cut) for cut in cuts]
    assert positions == sorted(positions, reverse=True)  # counted from the top


def test_mobilenet_v1_block_boundaries_are_tensors_of_the_real_graph():
    from retrain.models.backbones import load_graph_def
    graph = SHARED / "models" / "mobilenet_v1_1.0_224" / "frozen_graph.pb"
    if not graph.is_file():
        pytest.skip("../shared models not present")
    nodes = {node.name for node in load_graph_def(graph).node}
    cuts = get_architecture("mobilenet_1.0_224").fine_tune_cuts
    assert len(cuts) == 13 and all(cut.split(":")[0] in nodes for cut in cuts)


def test_a_keras_row_fine_tunes_its_own_layers_with_batch_norm_in_inference_mode(tmp_path):
    import keras

    from tests.conftest import tiny_spec
    model = keras.applications.MobileNet(include_top=False, weights=None, pooling="avg", alpha=0.25,
                                         input_shape=(32, 32, 3))
    weights = tmp_path / "models" / "keras" / "tiny.weights.h5"
    weights.parent.mkdir(parents=True)
    model.save_weights(weights)
    spec = tiny_spec(name="tiny_keras", source="keras", keras_model="MobileNet", model_file="keras/tiny.weights.h5",
                     keras_kwargs={"alpha": 0.25}, input_mean=0.0, input_std=1.0, feature_size=256,
                     feature_tensor="", block_cuts=("conv_pw_12_relu", "conv_pw_11_relu"))
    backbone = load_backbone(spec, tmp_path / "models")
    cut = cut_backbone(backbone, 2, tmp_path / "models")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(pooled_features(cut.top, cut.lower(images)), backbone(images), atol=1e-4)
    statistics = [v for v in cut.top.variables if "moving" in v.path]
    assert cut.top.variables and not statistics
    before = backbone(images)
    initial = [np.array(v.numpy()) for v in cut.top.variables]
    head = Head.linear(np.zeros((256, 2), np.float32), np.zeros(2, np.float32))
    fine_tune(cut.top, head, cut.lower(images), np.array([0, 1, 0], np.int32), FineTuneConfig(2, 1e-2, 3, 3), 0,
              log=lambda _: None)
    assert any(not np.array_equal(v.numpy(), w) for v, w in zip(cut.top.variables, initial))
    assert not np.allclose(cut.top.tuned_backbone()(images), before, rtol=1e-3, atol=0)
    # Early stopping snapshots and restores a Keras row's variables as it does a frozen graph's constants.
    rows, labels, lines = cut.lower(images), np.array([0, 1, 0], np.int32), []
    tuned = fine_tune(cut.top, head, rows, labels, FineTuneConfig(2, 1.0, 6, 3), 0, log=lines.append,
                      validation=(rows, labels), patience=1)
    reloaded, _ = loss_and_accuracy(tuned.predict_proba, pooled_features(cut.top, rows), labels)
    assert "restored the weights" in lines[-2]
    assert reloaded == pytest.approx(min(_validation_losses(lines)), abs=1e-4)


def test_a_resnet50_block_is_a_residual_unit_as_keras_names_them():
    import keras
    model = keras.applications.ResNet50(include_top=False, weights=None, pooling="avg")
    names = [layer.name for layer in model.layers]
    cuts = get_architecture("resnet50").fine_tune_cuts
    assert len(cuts) == 16
    top_block = names[names.index(cuts[0]) + 1:]
    assert {name.split("_")[0] + "_" + name.split("_")[1] for name in top_block[:-1]} == {"conv5_block3"}
    assert top_block[-1] == "avg_pool"
