"""Edge cases found by reviewing the merged code: each failed (a refusal or a traceback) before its fix."""
import pytest
from PIL import Image

from retrain.errors import UserError
from tests.test_cli import run_script


def test_a_fractional_percentage_is_accepted():
    from retrain.cli.retrain import build_parser
    from retrain.pipeline import retrain_options
    args = build_parser().parse_args(["--image_dir", "x", "--testing_percentage", "7.5",
                                      "--validation_percentage", "12.5"])
    options = retrain_options(vars(args))
    assert (options.testing_percentage, options.validation_percentage) == (7.5, 12.5)


@pytest.mark.parametrize("flag", ["--validation_batch_size", "--test_batch_size"])
def test_a_batch_size_of_zero_is_one_line_and_exit_code_2(flag, tmp_path):
    result = run_script("scripts.retrain", "--image_dir", str(tmp_path), flag, "0")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {flag} must be at least 1") and result.stderr.count("\n") == 1


def test_undo_of_a_file_that_is_not_a_journal_is_one_line(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    photo.write_bytes(photo.read_bytes() + b"\xff\xfe\x80")  # not UTF-8 either
    result = run_script("scripts.relabel", "--undo", str(photo))
    assert result.returncode == 2
    assert "is not a relabel journal" in result.stderr and result.stderr.count("\n") == 1


def test_a_damaged_graph_is_one_line_for_every_way_of_importing_it(tmp_path):
    import tensorflow as tf

    from retrain.explain.imported_graph import ImportedGraph
    graph_def = tf.compat.v1.GraphDef()
    node = graph_def.node.add(name="final_result", op="Identity")
    node.input.append("missing")
    node.attr["T"].type = tf.float32.as_datatype_enum
    path = tmp_path / "damaged.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(UserError, match="the graph cannot be loaded"):
        ImportedGraph(path)


def test_a_jpeg_over_the_pixel_budget_is_shown_at_a_size_reduced_decoding_reaches(tmp_path):
    from retrain.explain.gradcam import load_display
    photo = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1500), (200, 40, 40)).save(photo)  # 3 megapixels, against a budget of 1
    shown = load_display(photo, None, max_megapixels=1.0)
    assert shown.size == (500, 375)  # a quarter: decoded at half size (0.75 MP) and halved again


def test_early_stopping_on_a_diverged_run_is_one_line():
    from retrain.training.early_stopping import EarlyStopping
    stopping = EarlyStopping(patience=3)
    with pytest.raises(UserError, match="training diverged"):
        stopping.should_stop(10, float("nan"), lambda: None)


def test_export_to_saved_model_honours_trust_graph(tmp_path):
    from retrain.export.deploy import saved_model_from_graph
    from retrain.graph_contract import Sidecar
    from tests.hostile_files import graph_writing_file
    graph = tmp_path / "hostile.pb"
    graph.write_bytes(graph_writing_file(tmp_path / "written.txt").SerializeToString())
    contract = Sidecar(input_height=32, input_width=32)
    with pytest.raises(UserError, match="WriteFile"):
        saved_model_from_graph(graph, contract, tmp_path / "refused")
    saved_model_from_graph(graph, contract, tmp_path / "trusted", trust_graph=True)
    assert (tmp_path / "trusted" / "saved_model.pb").is_file()


def test_a_loop_op_outside_any_loop_is_refused_before_tensorflow_crashes_on_it(tmp_path):
    # Found by benchmarks.fuzz: an Identity turned into Exit made TensorFlow die with a segmentation fault.
    from retrain.models.backbones import load_graph_def
    from tests.conftest import tiny_graph_def
    graph_def = tiny_graph_def()
    relu = next(node for node in graph_def.node if node.op == "Relu")
    relu.op = "Exit"
    path = tmp_path / "damaged.pb"
    path.write_bytes(graph_def.SerializeToString())
    with pytest.raises(UserError, match="loop op Exit"):
        load_graph_def(path)
