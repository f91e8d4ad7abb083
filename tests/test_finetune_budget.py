"""Stage two's budget and schedule: --fine_tune_epochs, the --fine_tune_steps override, warm-up and cosine decay,
and the plan line, on the tiny block backbone."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import retrain.training.finetune as finetune
from retrain.errors import UserError
from retrain.models.backbones import load_backbone
from retrain.models.cut import cut_backbone
from retrain.options import FINE_TUNE_STEPS, default
from retrain.training.finetune import FineTuneConfig, fine_tune, plan_line
from retrain.training.head import Head
from retrain.training.optimizers import learning_rate_at
from tests.conftest import TINY_SIZE
from tests.tiny_blocks import tiny_blocks_model_dir, tiny_blocks_spec


def test_epochs_are_passes_over_the_rows_rounded_up_to_whole_steps():
    assert FineTuneConfig(blocks=1, batch_size=32, epochs=2.5).steps_for(100) == 8  # 250 rows = 7.8 batches
    assert FineTuneConfig(blocks=1, batch_size=32, epochs=4).steps_for(11_736) == 1467
    assert FineTuneConfig(blocks=1, batch_size=32, epochs=0.001).steps_for(10) == 1  # never 0 steps


def test_steps_given_win_over_epochs_and_neither_means_today_s_150_steps():
    assert FineTuneConfig(blocks=1, steps=7, epochs=4).steps_for(1000) == 7
    assert FineTuneConfig(blocks=1).steps_for(1000) == FineTuneConfig(blocks=1).steps_for(10) == FINE_TUNE_STEPS == 150
    assert (default("fine_tune_schedule"), default("fine_tune_warmup")) == ("constant", 0.0)  # today's constant rate


@pytest.mark.parametrize("changes, message", [
    (dict(epochs=0), "fine_tune_epochs must be positive, got 0"),
    (dict(warmup=1.0), "fine_tune_warmup must be from 0 to under 1, got 1.0"),
    (dict(schedule="linear"), "fine_tune_schedule='linear' is unknown; use one of constant, cosine"),
])
def test_bad_budget_or_schedule_names_the_option(changes, message):
    with pytest.raises(UserError, match=f"^{re.escape(message)}"):
        FineTuneConfig(blocks=1, **changes)
    FineTuneConfig(blocks=0, **changes)  # without fine-tuning they are not used, as the other fine_tune_* options


def _rates(schedule: str, total: int, warmup: int) -> list[float]:
    import tensorflow as tf
    return [float(learning_rate_at(1.0, schedule, tf.constant(step), total, warmup)) for step in range(total)]


def test_warm_up_rises_linearly_then_cosine_decays_over_the_remaining_steps():
    rates = _rates("cosine", 10, 2)
    np.testing.assert_allclose(rates[:3], [0.5, 1.0, 1.0], rtol=1e-6)  # steps 0, 1 warm up; cosine starts at 2
    np.testing.assert_allclose(rates[6], 0.5, rtol=1e-6)  # half-way through the 8 cosine steps
    np.testing.assert_allclose(rates[9], 0.5 * (1 + math.cos(math.pi * 7 / 8)), rtol=1e-5)
    np.testing.assert_allclose(_rates("constant", 6, 3), [1 / 3, 2 / 3, 1, 1, 1, 1], rtol=1e-6)
    # without warm-up, the head's cosine is unchanged
    np.testing.assert_allclose(_rates("cosine", 4, 0), [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)],
                               rtol=1e-6)


@pytest.fixture(scope="module")
def tiny_cut(tmp_path_factory):
    model_dir = tiny_blocks_model_dir(tmp_path_factory.mktemp("models"))
    backbone = load_backbone(tiny_blocks_spec(), model_dir)
    rows = cut_backbone(backbone, 2, model_dir).lower(
        np.random.default_rng(7).integers(0, 256, (24, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)).astype(np.float16)
    return backbone, model_dir, rows, (np.arange(24) % 3).astype(np.int32)


def _tuned(tiny_cut, config: FineTuneConfig, log=lambda _: None, validation=None):
    backbone, model_dir, rows, labels = tiny_cut
    cut = cut_backbone(backbone, config.blocks, model_dir)
    head = fine_tune(cut.top, Head.linear(np.zeros((8, 3), np.float32), np.zeros(3, np.float32)), rows, labels,
                     config, seed=0, log=log, validation=validation)
    return [v.numpy().tobytes() for v in cut.top.variables] + [head.layers[0].weights.tobytes()]


def test_an_epoch_budget_trains_exactly_as_the_same_number_of_steps(tiny_cut):
    by_epochs = _tuned(tiny_cut, FineTuneConfig(2, 1e-2, None, 8, epochs=4))  # 4 passes over 24 rows: 12 steps of 8
    assert by_epochs == _tuned(tiny_cut, FineTuneConfig(2, 1e-2, 12, 8))


def test_stage_two_follows_the_schedule_and_today_s_default_is_a_constant_rate(tiny_cut, monkeypatch):
    constant = _tuned(tiny_cut, FineTuneConfig(2, 1e-2, 12, 8))
    asked = []
    real = finetune.learning_rate_at
    monkeypatch.setattr(finetune, "learning_rate_at", lambda *args: asked.append(args[:2] + args[3:]) or real(*args))
    cosine = _tuned(tiny_cut, FineTuneConfig(2, 1e-2, 12, 8, schedule="cosine", warmup=0.25))
    assert asked == [(1e-2, "cosine", 12, 3)]  # 12 steps, 3 of them warm-up
    assert cosine != constant
    asked.clear()
    assert _tuned(tiny_cut, FineTuneConfig(2, 1e-2, 12, 8, schedule="constant", warmup=0.0)) == constant
    assert asked == [(1e-2, "constant", 12, 0)]


def test_the_plan_is_one_line_before_the_first_progress_line(tiny_cut):
    messages = []
    _, _, rows, labels = tiny_cut
    _tuned(tiny_cut, FineTuneConfig(2, 1e-2, None, 8, epochs=14, schedule="cosine", warmup=0.1),
           log=messages.append, validation=(rows[:6], labels[:6]))
    plans = [m for m in messages if m.startswith("Fine-tuning plan:")]
    assert len(plans) == 1
    assert re.fullmatch(r"Fine-tuning plan: the top 2 block\(s\) and the head on 24 cached training rows \(views "
                        r"included\), 14\.0 passes = 42 steps of 8 rows, Adam at 0\.01, 4 warm-up steps, cosine decay; "
                        r"about \d+ s \(steps 2-4 timed at \d+\.\d\d s each, 11 validation passes of \d+\.\d s\)",
                        plans[0]), plans[0]
    progress = [i for i, m in enumerate(messages) if m.startswith("Fine-tune step ")]
    assert messages.index(plans[0]) < progress[0] and messages[progress[0]].startswith("Fine-tune step 4/42")


def test_the_estimate_adds_the_timed_steps_the_rest_at_their_pace_and_the_validation_passes():
    line = plan_line(FineTuneConfig(blocks=4, batch_size=32), 11_736, 1800, [9.0, 0.5, 0.5, 0.5], 10, 30.0)
    # 10.5 s timed + 1796 steps at 0.5 s + 10 passes of 30 s = 1208.5 s
    assert line.startswith("Fine-tuning plan: the top 4 block(s) and the head on 11736 cached training rows (views "
                           "included), 4.9 passes = 1800 steps of 32 rows, Adam at 2e-05, constant; about 20 min "
                           "(steps 2-4 timed at 0.50 s each, 10 validation passes of 30.0 s)")
    assert plan_line(FineTuneConfig(blocks=1), 10, 1, [2.0], 0, 0.0).endswith("about 2 s (step 1 timed at 2.00 s each)")
