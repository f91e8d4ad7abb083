"""'None of these' in the written models: the unknown_score output of every format and its check (issue 22)."""
import dataclasses

import numpy as np
import pytest

from retrain.data.decode import decode_sample
from retrain.errors import ExportMismatch
from retrain.export.check import check_export
from retrain.export.deploy import check_images
from retrain.export.frozen_graph import export_frozen_graph
from retrain.graph_contract import UNKNOWN_SCORE_NAME, Sidecar
from retrain.models.backbones import load_backbone, load_graph_def
from retrain.models.model_file import FROZEN_GRAPH, SAVED_MODEL, TFLITE, load_model
from retrain.pipeline import run_retrain
from retrain.training.unknown import fit_leave_one_out
from tests.conftest import make_dataset, tiny_spec, write_tiny_model_dir
from tests.test_pipeline import options


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One seeded tiny retrain at the default --unknown_quantile, with a SavedModel and a float TFLite file."""
    work = tmp_path_factory.mktemp("unknown")
    model_dir = write_tiny_model_dir(work)
    messages = []
    out = work / "out"
    result = run_retrain(options(make_dataset(work / "images"), out, model_dir, saved_model_dir=str(out / "sm"),
                                 output_tflite=str(out / "g.tflite")), log=messages.append)
    return result, out, model_dir, messages


def _pixels(result, count=20):
    paths = result.data["validation"].paths + result.data["test"].paths
    return decode_sample(paths, count, tiny_spec().input_size, tiny_spec().input_size)[1]


def test_every_format_carries_the_score_of_the_library_function(trained):
    result, out, model_dir, messages = trained
    unknown = result.head.unknown
    assert unknown is not None
    assert any(m.startswith(f"Unknown score: threshold {unknown.threshold:.1f} passes 95% of ") for m in messages)
    assert Sidecar.read(out / "g.pb").unknown_threshold == unknown.threshold
    assert Sidecar.read(out / "g.tflite").unknown_threshold == unknown.threshold
    assert sum(m.startswith("Checked ") and "unknown score within" in m for m in messages) == 3
    backbone = load_backbone(tiny_spec(), model_dir)
    pixels = _pixels(result)
    expected = unknown.scores(backbone(pixels))
    spec = tiny_spec()
    for path, model_format in ((out / "g.pb", FROZEN_GRAPH), (out / "sm", SAVED_MODEL), (out / "g.tflite", TFLITE)):
        model = load_model(path)
        assert model.format == model_format and model.has_unknown_score
        probabilities, scores = model.predict_with_unknown(pixels, (spec.input_mean, spec.input_std))
        np.testing.assert_allclose(scores, expected, rtol=2e-3)  # float32 through a whitening of condition ~1e3
        np.testing.assert_allclose(probabilities, result.head.predict_proba(backbone(pixels)), atol=1e-5)
    graph_def = load_graph_def(out / "g.pb")
    assert {node.name for node in graph_def.node} >= {"final_result", UNKNOWN_SCORE_NAME}


def test_the_threshold_passes_the_quantile_of_the_held_out_scores(trained):
    result = trained[0]
    train = result.data["train"]
    left_out = fit_leave_one_out(train.features, train.labels)[1]  # each training image, by a fit without it
    scores = np.concatenate([left_out, result.head.unknown.scores(result.data["validation"].features)])
    assert len(scores) == len(train.labels) + len(result.data["validation"].labels)
    assert result.head.unknown.threshold == pytest.approx(np.quantile(scores, 0.95))
    assert np.mean(scores <= result.head.unknown.threshold) >= 0.95 - 1 / len(scores)


def test_quantile_zero_writes_the_graph_without_the_output(trained, tmp_path):
    result, out, model_dir, _ = trained
    run = run_retrain(options(make_dataset(tmp_path / "images"), tmp_path / "off", model_dir, unknown_quantile=0),
                      log=lambda m: None)
    assert run.head.unknown is None and Sidecar.read(tmp_path / "off" / "g.pb").unknown_threshold is None
    assert UNKNOWN_SCORE_NAME not in {node.name for node in load_graph_def(tmp_path / "off" / "g.pb").node}
    assert not load_model(tmp_path / "off" / "g.pb").has_unknown_score
    # the same head without the score gives the same bytes as before the score existed
    export_frozen_graph(load_backbone(tiny_spec(), model_dir), dataclasses.replace(result.head, unknown=None),
                        tmp_path / "plain.pb")
    export_frozen_graph(load_backbone(tiny_spec(), model_dir), result.head, tmp_path / "scored.pb")
    assert (tmp_path / "plain.pb").read_bytes() != (tmp_path / "scored.pb").read_bytes()
    assert load_graph_def(tmp_path / "plain.pb").node[-1].name != UNKNOWN_SCORE_NAME


@pytest.mark.parametrize("artifact", ["g.pb", "sm", "g.tflite"])
def test_the_check_fails_when_the_score_is_wrong_or_missing(trained, artifact, tmp_path):
    result, out, model_dir, _ = trained
    contract = Sidecar.read(out / "g.pb")
    backbone = load_backbone(tiny_spec(), model_dir)
    split = result.data["validation"]
    images = check_images(split.paths, split.labels, 10, contract,
                          lambda _, pixels: (result.head.predict_proba(features := backbone(pixels)),
                                             result.head.unknown.scores(features)), "the trained model")
    check_export(out / artifact, artifact, images, contract.labels, exact=True)
    wrong = dataclasses.replace(images, unknown=images.unknown * 1.05)
    with pytest.raises(ExportMismatch, match="unknown score"):
        check_export(out / artifact, artifact, wrong, contract.labels, exact=True)
    export_frozen_graph(backbone, dataclasses.replace(result.head, unknown=None), tmp_path / "none.pb")
    contract.write(tmp_path / "none.pb")  # a sidecar that promises the score the graph lacks
    with pytest.raises(ExportMismatch, match=f"no {UNKNOWN_SCORE_NAME} output"):
        check_export(tmp_path / "none.pb", "frozen graph", images, contract.labels, exact=True)
