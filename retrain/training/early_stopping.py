"""Validation loss on the whole validation set, and stopping when it no longer improves.

Early stopping judges the full set, not a random batch of it: on a batch the
loss jumps around by more than training improves it, so patience would run
out on noise. The best weights are kept and restored, as Keras'
``EarlyStopping(restore_best_weights=True)`` does.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

import numpy as np

from ..cache.rows import score_rows
from ..errors import UserError, option_name

Model = TypeVar("Model")
SMALLEST_PROBABILITY = 1e-30  # float32 softmax can round a hopeless class to 0; its loss is then -log of this


def loss_and_accuracy(predict_proba: Callable[[np.ndarray], np.ndarray], features, labels: np.ndarray,
                      rows: np.ndarray | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``predict_proba`` on ``features[rows]`` (default: all rows)."""
    rows = np.arange(len(labels)) if rows is None else rows
    probabilities, truth = score_rows(predict_proba, features, rows), labels[rows]
    losses = -np.log(np.maximum(probabilities[np.arange(len(rows)), truth], SMALLEST_PROBABILITY))
    return float(losses.mean()), float(np.mean(probabilities.argmax(axis=1) == truth))


class EarlyStopping(Generic[Model]):
    """Counts evaluations without a new lowest validation loss; remembers the best model."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_loss = np.inf
        self.best_step = 0
        self.best: Model | None = None
        self.waited = 0

    def should_stop(self, step: int, loss: float, snapshot: Callable[[], Model]) -> bool:
        """Record the evaluation at ``step``; True once ``patience`` evaluations in a row brought no improvement."""
        if not np.isfinite(loss):  # a diverged run has no best weights to restore
            raise UserError(f"training diverged: the validation loss at step {step} is {loss}; "
                            f"lower {option_name('learning_rate')}")
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.best, self.waited = loss, step, snapshot(), 0
            return False
        self.waited += 1
        return self.waited >= self.patience
