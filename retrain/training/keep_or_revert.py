"""Keep fine-tuning only where the validation set proves it pays: an exact McNemar test on paired predictions.

Both models answer the same validation images, so only the images they disagree on carry evidence: ``b``
that only the fine-tuned model gets right, ``c`` that only the head alone gets right. If fine-tuning did not
help, each of these ``b + c`` discordant images is equally likely to fall either way (a fair coin), and the
one-sided p-value is the chance of ``c`` or fewer head-only wins out of ``b + c``. Fine-tuning is kept when
``b > c`` and that chance is below ``KEEP_P_VALUE``: a gain larger than the noise of this validation set.
Ties, no discordant images and an empty validation set all keep the head alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The one-sided p-value below which fine-tuning is kept: a 1 in 20 chance that a model no better won as often.
KEEP_P_VALUE = 0.05


def one_sided_p_value(only_tuned_right: int, only_head_right: int) -> float:
    """The exact binomial chance of ``only_head_right`` or fewer of the discordant images going the head's way.

    Args:
        only_tuned_right: images only the fine-tuned model gets right (b).
        only_head_right: images only the head alone gets right (c).

    Returns:
        P(X <= c) for X ~ Binomial(b + c, 1/2); 1.0 without discordant images.
    """
    discordant = only_tuned_right + only_head_right
    return sum(math.comb(discordant, k) for k in range(only_head_right + 1)) / 2 ** discordant


@dataclass(frozen=True)
class Verdict:
    """The paired comparison of the head alone and the fine-tuned model on the whole validation set."""
    count: int  # validation images
    head_correct: int
    tuned_correct: int
    only_tuned_right: int  # b
    only_head_right: int  # c
    p_value: float

    @property
    def keep(self) -> bool:
        """Whether the fine-tuned model wins by more than this validation set's noise."""
        return self.only_tuned_right > self.only_head_right and self.p_value < KEEP_P_VALUE

    def line(self) -> str:
        """One line: the decision, both validation accuracies, N and p."""
        accuracies = (f"validation accuracy {_percent(self.tuned_correct, self.count)} fine-tuned vs "
                      f"{_percent(self.head_correct, self.count)} with the head alone (N={self.count}; "
                      f"{self.only_tuned_right} images only fine-tuned right, {self.only_head_right} only the head; "
                      f"one-sided exact McNemar p = {self.p_value:.3g})")
        if self.keep:
            return f"Keeping the fine-tuned model: {accuracies}"
        return (f"Reverting to the head alone on the untouched backbone: fine-tuning did not beat it by more than "
                f"chance (p < {KEEP_P_VALUE:g} needed): {accuracies}")


def _percent(correct: int, count: int) -> str:
    return f"{100 * correct / count:.1f}%" if count else "-"


def paired_verdict(labels: np.ndarray, head_predicted: np.ndarray, tuned_predicted: np.ndarray) -> Verdict:
    """Compare two models' predicted classes on the same images.

    Args:
        labels: the true class of each validation image, ``[N]``.
        head_predicted: stage one's head on the untouched top blocks, ``[N]`` class indices.
        tuned_predicted: the fine-tuned blocks and head, ``[N]``, the same images in the same order.

    Returns:
        The counts, the p-value and, through ``keep``, the decision.
    """
    head_right = np.asarray(head_predicted) == np.asarray(labels)
    tuned_right = np.asarray(tuned_predicted) == np.asarray(labels)
    only_tuned = int(np.sum(tuned_right & ~head_right))
    only_head = int(np.sum(head_right & ~tuned_right))
    return Verdict(len(head_right), int(head_right.sum()), int(tuned_right.sum()), only_tuned, only_head,
                   one_sided_p_value(only_tuned, only_head))
