"""Plot a training run: accuracy and loss against step, training and validation, early stop marked.

The tutorials users come from judge a run by these two curves (a validation
loss that turns up while the training loss keeps falling is overfitting).
Same drawing setup as ``evaluation.plot_report``: matplotlib's object API on
an Agg canvas, no display and no global pyplot state.
"""
from __future__ import annotations

import os
from typing import Sequence

from ..files import atomic_write, check_plot_path


def plot_history(history: Sequence, path: str | os.PathLike, best_step: int | None = None,
                 stopped_step: int | None = None) -> None:
    """Save accuracy and loss curves of ``history`` (EvalPoints); mark the restored and the stopping step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    file_format = check_plot_path(path, "plot_history")
    figure = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(figure)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    steps = [p.step for p in history]
    validated = [p for p in history if p.validation_accuracy is not None]
    accuracy_axes.plot(steps, [p.train_accuracy for p in history], label="training batch", linewidth=1)
    loss_axes.plot(steps, [p.cross_entropy for p in history], label="training batch", linewidth=1)
    if validated:
        accuracy_axes.plot([p.step for p in validated], [p.validation_accuracy for p in validated],
                           label="validation", linewidth=1.5)
        loss_axes.plot([p.step for p in validated], [p.validation_loss for p in validated],
                       label="validation", linewidth=1.5)
    for axes in (accuracy_axes, loss_axes):
        if best_step is not None:
            axes.axvline(best_step, color="green", linestyle="--", label=f"best, restored (step {best_step})")
        if stopped_step is not None:
            axes.axvline(stopped_step, color="red", linestyle=":", label=f"early stop (step {stopped_step})")
        axes.set(xlabel="step")
        axes.legend()
    accuracy_axes.set(ylabel="accuracy", ylim=(0, 1.02), title="Accuracy")
    loss_axes.set(ylabel="cross-entropy", title="Loss")
    with atomic_write(path) as handle:
        figure.savefig(handle, format=file_format, dpi=100)
