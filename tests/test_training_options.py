"""Class weights, early stopping on the full validation loss, and the training-history plot."""
from types import SimpleNamespace

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.explain.history_plot import plot_history
from retrain.training.class_balance import class_weights, imbalance_warning
from retrain.training.early_stopping import EarlyStopping, loss_and_accuracy


def test_balanced_class_weights_make_every_class_weigh_the_same():
    labels = np.array([0] * 90 + [1] * 10 + [2] * 20)
    weights = class_weights("balanced", labels, 3)
    totals = weights * np.bincount(labels)
    np.testing.assert_allclose(totals, totals[0])
    np.testing.assert_allclose(np.mean(weights[labels]), 1.0)
    assert class_weights("none", labels, 3) is None


def test_imbalance_warning_only_beyond_five_times_and_without_balancing():
    names = ["big", "small"]
    assert "consider class_weight='balanced'" in imbalance_warning(np.array([0] * 51 + [1] * 10), names, "none")
    assert imbalance_warning(np.array([0] * 50 + [1] * 10), names, "none") is None
    assert imbalance_warning(np.array([0] * 51 + [1] * 10), names, "balanced") is None


def test_loss_and_accuracy_score_every_row():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    loss, accuracy = loss_and_accuracy(lambda rows: rows, probabilities, np.array([0, 1, 1]))
    assert accuracy == pytest.approx(2 / 3)
    assert loss == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4])))


def test_early_stopping_waits_patience_evaluations_and_keeps_the_best():
    stopping = EarlyStopping(patience=2)
    decisions = [stopping.should_stop(step, loss, lambda step=step: f"model@{step}")
                 for step, loss in [(10, 1.0), (20, 0.5), (30, 0.6), (40, 0.4), (50, 0.4), (60, 0.7)]]
    assert decisions == [False, False, False, False, False, True]
    assert (stopping.best_step, stopping.best, stopping.best_loss) == (40, "model@40", 0.4)


@pytest.mark.parametrize("suffix", ["png", "svg", "pdf"])
def test_history_plot_writes_each_format(tmp_path, suffix):
    history = [SimpleNamespace(step=s, train_accuracy=s / 40, cross_entropy=1 / s, validation_accuracy=s / 50,
                               validation_loss=1.5 / s) for s in (10, 20, 30, 40)]
    path = tmp_path / f"history.{suffix}"
    plot_history(history, path, best_step=30, stopped_step=40)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:4] in {b"\x89PNG", b"<?xm", b"%PDF"}


def test_history_plot_rejects_other_formats(tmp_path):
    with pytest.raises(UserError, match="^plot_history=.*png, .pdf or .svg"):
        plot_history([], tmp_path / "history.jpg")
