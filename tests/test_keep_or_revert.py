"""The keep-or-revert decision after fine-tuning: an exact one-sided McNemar test on hand-made predictions."""
from __future__ import annotations

import numpy as np
import pytest

from retrain.training.keep_or_revert import one_sided_p_value, paired_verdict


def predictions(both_right: int, only_tuned: int, only_head: int, both_wrong: int):
    """Labels (all class 0) and the two models' predictions with these counts of each agreement."""
    rows = [(0, 0)] * both_right + [(1, 0)] * only_tuned + [(0, 1)] * only_head + [(1, 1)] * both_wrong
    head, tuned = np.array(rows, dtype=int).reshape(-1, 2).T
    return np.zeros(len(rows), int), head, tuned


@pytest.mark.parametrize("b, c, expected", [
    (0, 0, 1.0), (5, 0, 1 / 32), (4, 0, 1 / 16), (1, 1, 0.75), (8, 2, 56 / 1024), (9, 1, 11 / 1024),
])
def test_the_p_value_is_the_exact_binomial_tail(b, c, expected):
    assert one_sided_p_value(b, c) == pytest.approx(expected)


def test_a_clear_gain_keeps_the_fine_tuned_model():
    verdict = paired_verdict(*predictions(both_right=50, only_tuned=9, only_head=1, both_wrong=3))
    assert verdict.keep and verdict.count == 63 and (verdict.head_correct, verdict.tuned_correct) == (51, 59)
    assert verdict.line().startswith("Keeping the fine-tuned model: validation accuracy 93.7% fine-tuned vs 81.0%")
    assert "N=63" in verdict.line() and "p = 0.0107" in verdict.line()


@pytest.mark.parametrize("b, c", [(8, 2), (3, 3), (2, 5), (0, 0), (4, 0)])
def test_a_gain_within_the_noise_a_tie_a_loss_or_no_discordance_reverts(b, c):
    verdict = paired_verdict(*predictions(both_right=40, only_tuned=b, only_head=c, both_wrong=2))
    assert not verdict.keep
    assert verdict.line().startswith("Reverting to the head alone on the untouched backbone")
    assert len(verdict.line().splitlines()) == 1


def test_tiny_and_empty_validation_sets_revert():
    one = paired_verdict(np.array([1]), np.array([0]), np.array([1]))  # one image, only fine-tuned right: p = 0.5
    assert (one.only_tuned_right, one.only_head_right, one.p_value, one.keep) == (1, 0, 0.5, False)
    empty = paired_verdict(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int))
    assert (empty.count, empty.p_value, empty.keep) == (0, 1.0, False)
    assert "N=0" in empty.line()


def test_five_discordant_images_all_one_way_are_the_fewest_that_keep():
    assert paired_verdict(*predictions(0, 5, 0, 0)).keep  # p = 1/32
    assert not paired_verdict(*predictions(0, 4, 0, 0)).keep  # p = 1/16
