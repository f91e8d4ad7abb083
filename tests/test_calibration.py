"""Temperature scaling (--calibrate), the expected calibration error and the reliability diagram."""
import json

import numpy as np
import pytest

from retrain.graph_contract import Sidecar
from retrain.label.labeler import GraphLabeler
from retrain.metrics import expected_calibration_error, reliability_bins
from retrain.pipeline import run_retrain
from retrain.training.calibration import fit_temperature, negative_log_likelihood
from tests.test_pipeline import options


def test_ece_of_a_hand_made_example():
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    truths = np.array([0, 1, 1, 0])
    # bins of 1/15: 0.9 twice (one right: |0.5 - 0.9| * 2/4), 0.7 right (0.3 * 1/4), 0.6 right (0.4 * 1/4)
    assert expected_calibration_error(probabilities, truths) == pytest.approx(0.2 + 0.075 + 0.1)
    bins = reliability_bins(probabilities, truths)
    assert bins.counts.sum() == 4 and bins.counts[13] == 2 and bins.accuracy[13] == 0.5
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0])) == 0.0


def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_at():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 5))
    drawn = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    truths = np.array([rng.choice(5, p=row) for row in drawn])
    temperature = fit_temperature(logits, truths)
    assert temperature == pytest.approx(2.5, rel=0.05)
    assert temperature == fit_temperature(logits, truths)  # deterministic
    assert negative_log_likelihood(logits, truths, temperature) < negative_log_likelihood(logits, truths)


def test_a_sidecar_from_before_calibration_loads_with_temperature_one(tmp_path):
    graph = tmp_path / "old.pb"
    old = {key: value for key, value in Sidecar(labels=["a", "b"]).__dict__.items() if key != "temperature"}
    graph.with_suffix(".json").write_text(json.dumps(old))
    assert Sidecar.read(graph).temperature == 1.0


def test_calibrate_builds_the_temperature_into_the_graph_and_keeps_every_top1(image_dir, tmp_path, tiny_model_dir):
    plain = run_retrain(options(image_dir, tmp_path / "plain", tiny_model_dir), log=lambda m: None)
    messages = []
    calibrated = run_retrain(options(image_dir, tmp_path / "cal", tiny_model_dir, calibrate=True,
                                     html=str(tmp_path / "report")), log=messages.append)
    temperature = calibrated.head.temperature
    assert plain.head.temperature == 1.0 and temperature != 1.0
    assert Sidecar.read(tmp_path / "cal" / "g.pb").temperature == temperature
    assert Sidecar.read(tmp_path / "plain" / "g.pb").temperature == 1.0
    assert any(m.startswith("Calibrated: temperature") for m in messages)
    assert any(m.startswith("ECE = ") and "before calibration" in m and f"(temperature {temperature:.3f})" in m
               for m in messages)
    validation = calibrated.data["validation"]
    logits = calibrated.head.logits_of(validation.features)
    assert (negative_log_likelihood(logits, validation.labels, temperature)
            <= negative_log_likelihood(logits, validation.labels))
    test_paths = calibrated.data["test"].paths
    answers = {}
    for run in ("plain", "cal"):
        labeler = GraphLabeler(tmp_path / run / "g.pb", tmp_path / run / "labels.txt")
        answers[run] = np.stack([p for _, p, _ in labeler.predict_files(test_paths)])
    assert (answers["plain"].argmax(axis=1) == answers["cal"].argmax(axis=1)).all()
    # the graph's softmax is the trained one with its logits divided by the temperature
    rescaled = np.exp(np.log(answers["plain"]) / temperature)
    np.testing.assert_allclose(answers["cal"], rescaled / rescaled.sum(axis=1, keepdims=True), atol=1e-4)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<svg class='reliability'" in page and "ECE = " in page


def test_a_fine_tuned_run_is_calibrated_on_its_tuned_features(image_dir, tmp_path):
    from tests.test_finetune_pipeline import options as fine_tune_options
    from tests.tiny_blocks import tiny_blocks_model_dir
    messages = []
    result = run_retrain(fine_tune_options(image_dir, tmp_path / "out", tiny_blocks_model_dir(tmp_path / "models"),
                                           calibrate=True, augment_copies=0), log=messages.append)
    assert any(m.startswith("Calibrated: temperature") for m in messages)
    assert Sidecar.read(tmp_path / "out" / "g.pb").temperature == result.head.temperature != 1.0
    assert any(m.startswith("Checked ") for m in messages)  # the graph agrees with the tuned model, T included
