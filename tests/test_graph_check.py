"""Graphs are checked before they run: pure computation passes, anything with side effects is refused."""
import dataclasses

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.export.frozen_graph import export_frozen_graph, saved_model_from_graph, sidecar_for
from retrain.models.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, get_architecture
from retrain.models.backbones import Backbone, load_backbone, load_graph_def
from retrain.models.graph_check import check_graph_def, check_saved_model, check_tflite_ops
from retrain.training.head import DenseLayer, Head
from tests.conftest import PROJECT, tiny_graph_def, tiny_spec
from tests.hostile_files import graph_writing_file, saved_model_writing_file
from tests.test_todays_backbones import TODAYS_ROWS

# The smallest input each Keras Applications row builds at: the ops do not depend on the size.
KERAS_SMALLEST_INPUT = {"inception_v3": 75, "vgg16": 32, "resnet50": 32,
                        **dict.fromkeys(TODAYS_ROWS, 32)}


def keras_row_without_weights(name: str) -> Backbone:
    """A registry row built as the registry says, with random weights (the real ones need a download)."""
    from retrain.models.backbones import keras_features
    spec = dataclasses.replace(get_architecture(name), input_size=KERAS_SMALLEST_INPUT[name])
    return Backbone(spec, keras_features(spec, None), spec.feature_size)


def check_exports(backbone: Backbone, tmp_path) -> None:
    """Export with a --hidden_units head (its ops include the linear head's) and check graph and SavedModel."""
    head = Head([DenseLayer(np.zeros((backbone.feature_size, 4), np.float32), np.zeros(4, np.float32)),
                 DenseLayer(np.zeros((4, 3), np.float32), np.zeros(3, np.float32))])
    export_frozen_graph(backbone, head, tmp_path / "graph.pb")
    check_graph_def(load_graph_def(tmp_path / "graph.pb"), "graph.pb")
    saved_model_from_graph(tmp_path / "graph.pb", sidecar_for(backbone, ["a", "b", "c"]), tmp_path / "saved_model")
    check_saved_model(tmp_path / "saved_model")


def test_frozen_graph_backbones_and_their_exports_pass(tiny_model_dir, tmp_path):
    check_exports(load_backbone(tiny_spec(), tiny_model_dir), tmp_path)


@pytest.mark.integration
def test_the_bundled_backbone_and_its_exports_pass(tmp_path):
    spec = get_architecture(DEFAULT_ARCHITECTURE)
    check_graph_def(load_graph_def(PROJECT / "models" / spec.model_file), spec.model_file)
    check_exports(load_backbone(spec, PROJECT / "models"), tmp_path)


def test_every_keras_row_of_the_registry_is_covered():
    assert set(KERAS_SMALLEST_INPUT) == {name for name, spec in ARCHITECTURES.items() if spec.source == "keras"}


@pytest.mark.integration
# Today's rows (issue 23) export a graph and a SavedModel and check both in their end-to-end retrain tests.
@pytest.mark.parametrize("name", ["inception_v3", "vgg16", "resnet50"])
def test_the_older_keras_rows_export_graphs_that_pass(name, tmp_path):
    check_exports(keras_row_without_weights(name), tmp_path)


def test_tfhub_modules_and_their_exports_pass(tmp_path):
    from tests.test_export import hub_backbone
    backbone = hub_backbone(tmp_path)
    check_saved_model(tmp_path / "hub")
    check_exports(backbone, tmp_path)


def test_a_graph_that_writes_a_file_is_refused_naming_op_and_node(tmp_path):
    with pytest.raises(UserError, match=r"evil\.pb contains op WriteFile \(node SideEffect\).*pass trust_graph=True$"):
        check_graph_def(graph_writing_file(tmp_path / "x"), "evil.pb")
    assert not (tmp_path / "x").exists()


def test_ops_inside_functions_are_checked_too():
    import tensorflow as tf

    @tf.function(autograph=False)
    def reads(name):
        return tf.io.read_file(name)

    graph_def = tiny_graph_def()  # the function is in the library only: no node calls it
    graph_def.library.function.add().CopyFrom(
        reads.get_concrete_function(tf.TensorSpec([], tf.string)).function_def)
    with pytest.raises(UserError, match=r"op ReadFile \(node \S+ in function __inference_reads"):
        check_graph_def(graph_def, "g.pb")


def test_a_saved_model_that_writes_a_file_when_served_is_refused(tmp_path):
    saved_model_writing_file(tmp_path / "evil", tmp_path / "x")
    with pytest.raises(UserError, match=r"contains op WriteFile \(node \S+ in function"):
        check_saved_model(tmp_path / "evil")


def test_retrain_refuses_such_a_tfhub_module_before_loading_it(tmp_path):
    from retrain.models.architectures import tfhub_spec
    saved_model_writing_file(tmp_path / "evil", tmp_path / "x")
    with pytest.raises(UserError, match=r"evil contains op WriteFile"):
        load_backbone(tfhub_spec(str(tmp_path / "evil"), input_size=16), tmp_path / "models")
    assert not (tmp_path / "x").exists()
    trusted = load_backbone(tfhub_spec(str(tmp_path / "evil"), input_size=16), tmp_path / "models", trust_graph=True)
    trusted(np.zeros((1, 16, 16, 3), np.uint8))
    assert (tmp_path / "x").exists()  # trusted, it ran


def test_not_a_saved_model_is_one_line(tmp_path):
    with pytest.raises(UserError, match="is not a SavedModel"):
        check_saved_model(tmp_path)


def test_tflite_builtins_pass_and_custom_or_unsafe_flex_ops_are_refused():
    check_tflite_ops([("CONV_2D", "0"), ("FULLY_CONNECTED", "1"), ("SOFTMAX", "2"), ("FlexConv2D", "3")], "m.tflite")
    for op in ("FlexWriteFile", "FlexPyFunc", "MyCustomOp"):
        with pytest.raises(UserError, match=f"m.tflite contains op {op} \\(node 7\\)"):
            check_tflite_ops([("CONV_2D", "0"), (op, "7")], "m.tflite")
