"""ONNX export (--output_onnx, scripts.export --to onnx), reading .onnx files, and the ONNX op allowlist."""
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from retrain.cli import evaluate as evaluate_script
from retrain.cli import export as export_script
from retrain.cli import label_image as label_image_script
from retrain.cli import retrain as retrain_script
from retrain.cli.common import run_cli
from retrain.errors import UserError
from retrain.export.deploy import ExportRequest, export_model
from retrain.graph_contract import FINAL_TENSOR_NAME, INPUT_NAME, UNKNOWN_SCORE_NAME, Sidecar
from retrain.job_options import retrain_options
from retrain.label.labeler import GraphLabeler
from retrain.models.model_file import ONNX, detect_format, load_model
from retrain.pipeline import run_retrain
from tests.conftest import TINY_SIZE, make_dataset
from tests.test_deploy import pixels_of
from tests.test_pipeline import options
from tests.test_relabel import tiny_graph  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("onnx_check") / "images", per_class=6)


@pytest.fixture(scope="module")
def exported(tiny_graph, images, tmp_path_factory):  # noqa: F811
    """The tiny classifier exported as scripts.export --to onnx does, checked on ``images``."""
    output = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    lines = list(export_model(GraphLabeler(tiny_graph), ExportRequest(str(tiny_graph), "onnx", str(output),
                                                                      image_dir=str(images))))
    return output, lines


def test_export_keeps_the_contract_and_the_top1_of_the_frozen_graph(exported, tiny_graph, images):  # noqa: F811
    output, lines = exported
    assert lines[0].startswith("Checked ONNX: same top-1 as the source graph on all 18 check images")
    model_proto = onnx.load(str(output))
    assert [i.name for i in model_proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in model_proto.graph.output] == [FINAL_TENSOR_NAME]
    assert Sidecar.read(output) == Sidecar.read(tiny_graph)
    assert detect_format(output) == ONNX and detect_format(tiny_graph) != ONNX
    model, source = load_model(output), load_model(tiny_graph)
    assert model.format == ONNX and model.input_size == (TINY_SIZE, TINY_SIZE) and model.batched
    _, pixels = pixels_of(images)
    sidecar = Sidecar.read(tiny_graph)
    normalization = (sidecar.input_mean, sidecar.input_std)
    ours, theirs = model.predict(pixels, normalization), source.predict(pixels, normalization)
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_label_image_and_evaluate_read_onnx_files(exported, tiny_graph, images, capsys):  # noqa: F811
    output, _ = exported
    image = sorted(images.rglob("*.jpg"))[0]
    for graph in (tiny_graph, output):
        assert label_image_script.main(["--graph", str(graph), "--image", str(image)]) == 0
    graph_lines, onnx_lines = np.array_split(capsys.readouterr().out.splitlines(), 2)
    assert [line.split()[0] for line in graph_lines] == [line.split()[0] for line in onnx_lines]
    for graph in (tiny_graph, output):
        assert evaluate_script.main(["--graph", str(graph), "--image_dir", str(images)]) == 0
    graph_report, onnx_report = capsys.readouterr().out.split("Accuracy")[1:3]
    assert graph_report.split()[0] == onnx_report.split()[0]


def test_retrain_writes_and_checks_an_onnx_file_with_the_unknown_score(image_dir, tmp_path, tiny_model_dir):
    messages = []
    out = tmp_path / "out"
    result = run_retrain(options(image_dir, out, tiny_model_dir, output_onnx=str(out / "g.onnx")),
                         log=messages.append)
    checked = [m for m in messages if m.startswith("Checked ONNX: same top-1 as the trained model")]
    assert len(checked) == 1 and "unknown score within" in checked[0]
    assert any(m == f"Wrote {out / 'g.onnx'} and {out / 'g.json'}" for m in messages)
    model = load_model(out / "g.onnx")
    assert model.has_unknown_score
    assert [o.name for o in onnx.load(str(out / "g.onnx")).graph.output] == [FINAL_TENSOR_NAME, UNKNOWN_SCORE_NAME]
    assert Sidecar.read(out / "g.onnx").unknown_threshold == result.head.unknown.threshold


def _onnx_file(path, node, extra_opsets=()):
    """A one-node ONNX model from ``input`` to ``final_result``."""
    graph = helper.make_graph(
        [node], "hand_made", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 4, 4, 3])],
        [helper.make_tensor_value_info(FINAL_TENSOR_NAME, TensorProto.FLOAT, [1, 4, 4, 3])])
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(domain, 1) for domain in extra_opsets)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_an_op_outside_the_onnx_allowlist_is_refused_in_one_line(tmp_path, capsys):
    body = helper.make_graph([], "body", [], [])
    loop = helper.make_node("Loop", ["", ""], [FINAL_TENSOR_NAME], name="the_loop", body=body)
    custom = helper.make_node("Shell", [INPUT_NAME], [FINAL_TENSOR_NAME], name="run_me", domain="evil.ops")
    cases = {"ONNX op Loop (node the_loop)": _onnx_file(tmp_path / "loop.onnx", loop),
             "ONNX op evil.ops.Shell (node run_me)": _onnx_file(tmp_path / "custom.onnx", custom, ["evil.ops"])}
    for expected, path in cases.items():
        with pytest.raises(UserError, match=expected.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
            load_model(path)
        image = tmp_path / "i.jpg"
        image.write_bytes(next(iter(make_dataset(tmp_path / "imgs", per_class=1).rglob("*.jpg"))).read_bytes())
        with pytest.raises(SystemExit) as stop:
            run_cli(label_image_script.main, ["--graph", str(path), "--image", str(image)])
        assert stop.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and expected in error and "--trust_graph" in error
    identity = helper.make_node("Identity", [INPUT_NAME], [FINAL_TENSOR_NAME], name="fine")
    assert load_model(_onnx_file(tmp_path / "identity.onnx", identity)).format == ONNX


def test_without_the_extra_onnx_fails_before_any_work_with_the_pip_command(image_dir, tmp_path, tiny_graph,  # noqa: F811
                                                                           monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "tf2onnx" else real_find_spec(name, *args))
    with pytest.raises(UserError, match=r"^output_onnx needs tf2onnx, not installed: pip install 'retrain\[onnx\]'$"):
        retrain_options({"image_dir": str(image_dir), "output_onnx": str(tmp_path / "g.onnx")})
    for main, argv in ((retrain_script.main, ["--image_dir", str(image_dir), "--output_onnx", str(tmp_path / "g.onnx"),
                                              "--bottleneck_dir", str(tmp_path / "bn")]),
                       (export_script.main, ["--graph", str(tiny_graph), "--to", "onnx",
                                             "--output", str(tmp_path / "t.onnx")])):
        with pytest.raises(SystemExit) as stop:
            run_cli(main, argv)
        assert stop.value.code == 2
        error = capsys.readouterr().err
        assert error.endswith("needs tf2onnx, not installed: pip install 'retrain[onnx]'\n") and error.count("\n") == 1
    assert not (tmp_path / "bn").exists()  # nothing was computed


@pytest.mark.integration
def test_real_mobilenet_to_onnx_gives_the_frozen_graphs_top1_on_every_test_image(flowers_retrained, tmp_path):
    from retrain.data.decode import decode_sample
    from retrain.data.images import split_images
    from retrain.export.onnx_file import write_onnx_model
    from tests.conftest import FLOWERS
    graph = flowers_retrained.out / "graph.pb"
    labeler = GraphLabeler(graph)
    output = write_onnx_model(graph, tmp_path / "flowers.onnx", labeler.config)
    test_paths = [r.path for r in split_images(FLOWERS) if r.split == "test"]
    paths, pixels = decode_sample(test_paths, len(test_paths), 224, 224)
    assert len(paths) == len(test_paths) > 0
    normalization = (labeler.config.input_mean, labeler.config.input_std)
    ours, theirs = load_model(output).predict(pixels, normalization), labeler.model.predict(pixels, normalization)
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
