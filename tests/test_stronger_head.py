"""The head options through the whole job and the CLI: train, stop early, plot, export, refuse bad values."""
import numpy as np
import pytest

from retrain.label.labeler import GraphLabeler
from retrain.pipeline import run_retrain
from retrain.training.head import TrainingConfig
from tests.conftest import make_image
from tests.test_cli import run_script
from tests.test_pipeline import options

STRONG = dict(hidden_units=16, dropout=0.2, label_smoothing=0.1, optimizer="adam", learning_rate=0.01,
              learning_rate_schedule="cosine", weight_decay=1e-4, class_weight="balanced")


def test_stronger_head_stops_early_plots_and_exports_what_it_trained(image_dir, tmp_path, tiny_model_dir):
    messages = []
    opts = options(image_dir, tmp_path, tiny_model_dir, plot_history=str(tmp_path / "history.svg"),
                   training=TrainingConfig(steps=2000, seed=1, early_stopping_patience=5, **STRONG))
    result = run_retrain(opts, log=messages.append)
    assert result.test_report.accuracy >= 0.9
    stop = [m for m in messages if m.startswith("Early stopping at step")]
    assert stop and result.history[-1].step < 2000 and f"step {result.history[-1].step}:" in stop[0]
    assert {p.validation_count for p in result.history} == {len(result.data["validation"].labels)}
    assert (tmp_path / "history.svg").read_text().count("<svg") == 1
    assert len(result.head.layers) == 2
    test = result.data["test"]
    labeler = GraphLabeler(tmp_path / "g.pb", tmp_path / "labels.txt")
    from_graph = np.array([p for _, p, _ in labeler.predict_files(test.paths)])
    # the cache holds float16 features, the graph computes float32 ones
    np.testing.assert_allclose(from_graph, result.head.predict_proba(test.features), atol=0.02)


def test_stronger_head_is_bit_identical_with_the_same_seed(image_dir, tmp_path, tiny_model_dir):
    for run in ("a", "b"):
        run_retrain(options(image_dir, tmp_path / run, tiny_model_dir,
                            training=TrainingConfig(steps=100, seed=4, **STRONG)), log=lambda m: None)
    assert (tmp_path / "a" / "g.pb").read_bytes() == (tmp_path / "b" / "g.pb").read_bytes()


def test_imbalance_warning_and_small_classes_in_the_summary(tmp_path, tiny_model_dir):
    for label, colour, count in (("red", (200, 40, 40), 40), ("blue", (50, 60, 210), 4)):
        for i in range(count):
            make_image(tmp_path / "images" / label / f"{label}_{i}.jpg", colour, seed=i)
    messages = []
    result = run_retrain(options(tmp_path / "images", tmp_path, tiny_model_dir, testing_percentage=10,
                                 validation_percentage=10, training=TrainingConfig(steps=20, seed=0)),
                         log=messages.append)
    assert any("'blue' 2/1/1" in m for m in messages if m.startswith("Found 44 images"))
    assert any("consider class_weight='balanced'" in m for m in messages)
    assert result.test_report.support[result.labels.index("blue")] == 1


def test_early_stopping_without_validation_images_is_a_user_error(image_dir, tmp_path, tiny_model_dir):
    from retrain.errors import UserError
    with pytest.raises(UserError, match="^early_stopping_patience needs validation images; raise validation_perc"):
        run_retrain(options(image_dir, tmp_path, tiny_model_dir, validation_percentage=0,
                            training=TrainingConfig(steps=20, early_stopping_patience=3)), log=lambda m: None)


@pytest.mark.parametrize("flags, message", [
    (["--hidden_units", "0"], "--hidden_units must be at least 1"),
    (["--dropout", "1"], "--dropout must be from 0 to under 1"),
    (["--optimizer", "rmsprop"], "--optimizer 'rmsprop' is unknown; use one of sgd, momentum, adam"),
    (["--early_stopping_patience", "0"], "--early_stopping_patience must be at least 1"),
    (["--plot_history", "history.jpg"], "use a .png, .pdf or .svg file name"),
])
def test_bad_head_flags_are_one_line_and_exit_code_2(image_dir, tmp_path, flags, message):
    result = run_script("scripts.retrain", "--image_dir", str(image_dir), "--bottleneck_dir", str(tmp_path / "bn"),
                        "--output_graph", str(tmp_path / "g.pb"), *flags)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize("changes, message", [
    (dict(dropout=-0.1), "^dropout must be from 0 to under 1"),
    (dict(label_smoothing=1.0), "^label_smoothing must be from 0 to under 1"),
    (dict(weight_decay=-1.0), "^weight_decay must be 0 or more"),
    (dict(learning_rate_schedule="step"), "^learning_rate_schedule='step' is unknown"),
    (dict(class_weight="auto"), "^class_weight='auto' is unknown; use one of none, balanced"),
])
def test_bad_head_options_are_user_errors(changes, message):
    from retrain.errors import UserError
    with pytest.raises(UserError, match=message):
        TrainingConfig(**changes)
