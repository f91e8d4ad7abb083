"""The retrain job with --fine_tune_blocks and --augment_copies, on the tiny block backbone and generated images."""
from __future__ import annotations

import json

import numpy as np
import pytest

import retrain.cache.bottlenecks as bottlenecks
from retrain.label.labeler import GraphLabeler
from retrain.pipeline import RetrainOptions, run_retrain
from retrain.training.finetune import FineTuneConfig
from retrain.training.head import TrainingConfig
from tests.test_cli import run_script
from tests.tiny_blocks import tiny_blocks_model_dir, tiny_blocks_spec


def options(image_dir, out, model_dir, **changes) -> RetrainOptions:
    fields = dict(image_dir=str(image_dir), architecture=tiny_blocks_spec(), output_graph=str(out / "g.pb"),
                  output_labels=str(out / "labels.txt"), summaries_dir=str(out / "logs"), model_dir=str(model_dir),
                  bottleneck_dir=str(out / "bn"), training=TrainingConfig(steps=100, learning_rate=0.5, seed=3),
                  testing_percentage=25, validation_percentage=25, bottleneck_batch_size=4,
                  fine_tune=FineTuneConfig(blocks=2, learning_rate=1e-3, steps=8, batch_size=8), augment_copies=2)
    fields.update(changes)
    return RetrainOptions(**fields)


@pytest.fixture
def block_model_dir(tmp_path):
    return tiny_blocks_model_dir(tmp_path / "models")


def test_fine_tuned_run_exports_an_ordinary_graph_and_says_what_it_tuned(image_dir, tmp_path, block_model_dir):
    messages = []
    result = run_retrain(options(image_dir, tmp_path / "out", block_model_dir), log=messages.append)
    train = len(result.data["train"].labels)
    cache_line = next(m for m in messages if m.startswith("Cache: "))
    assert "2 distorted views per training image" in cache_line
    assert any(m.startswith(f"Augmented views: 0 of {2 * train}") for m in messages)
    assert any(m.startswith("Fine-tune step 8/8") for m in messages)
    assert result.test_report is not None
    graph = tmp_path / "out" / "g.pb"
    assert json.loads(graph.with_suffix(".json").read_text())["fine_tuned_blocks"] == 2
    labeler = GraphLabeler(graph)  # label_image, relabel and evaluate load it like any graph
    probabilities = np.stack([p for _, p, _ in labeler.predict_files(sorted(image_dir.rglob("*.jpg"))[:3])])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # the cut cache sits beside (not in) the pooled cache, one folder per cut point
    assert len([d for d in (tmp_path / "out" / "bn").iterdir() if d.is_dir()]) == 1


def test_same_seed_gives_a_bit_identical_fine_tuned_graph_even_after_a_kill_while_caching(
        image_dir, tmp_path, block_model_dir, monkeypatch):
    run_retrain(options(image_dir, tmp_path / "a", block_model_dir), log=lambda _: None)
    expected = (tmp_path / "a" / "g.pb").read_bytes()

    monkeypatch.setattr(bottlenecks, "FLUSH_EVERY_IMAGES", 4)
    real_batches = bottlenecks.decoded_batches
    batches_left = [5]  # of 9 batches of images

    def killed_after_a_while(*args, **kwargs):
        for batch in real_batches(*args, **kwargs):
            batches_left[0] -= 1
            if batches_left[0] < 0:
                raise KeyboardInterrupt  # what a kill during caching leaves: the shards flushed so far
            yield batch

    monkeypatch.setattr(bottlenecks, "decoded_batches", killed_after_a_while)
    for _ in range(2):  # killed once while caching images, once while caching views
        with pytest.raises(KeyboardInterrupt):
            run_retrain(options(image_dir, tmp_path / "b", block_model_dir), log=lambda _: None)
        batches_left[0] = 3  # of 7 batches of views, now that the images are cached
    monkeypatch.setattr(bottlenecks, "decoded_batches", real_batches)
    messages = []
    run_retrain(options(image_dir, tmp_path / "b", block_model_dir), log=messages.append)
    assert any("to compute" in m and not m.endswith(" 0 to compute") for m in messages)  # it did resume
    assert (tmp_path / "b" / "g.pb").read_bytes() == expected


@pytest.mark.parametrize("flags, message", [
    (["--fine_tune_blocks", "14"], "--fine_tune_blocks 14 is out of range: mobilenet_1.0_224 has 13 blocks"),
    (["--fine_tune_blocks", "-1"], "--fine_tune_blocks must be 0 or more, got -1"),
    (["--augment_copies", "-2"], "--augment_copies must be 0 or more, got -2"),
    (["--fine_tune_blocks", "1", "--fine_tune_steps", "0"], "--fine_tune_steps must be at least 1, got 0"),
])
def test_bad_fine_tuning_flags_give_one_line_and_exit_code_2(image_dir, tmp_path, flags, message):
    result = run_script("scripts.retrain", "--image_dir", str(image_dir), "--bottleneck_dir", str(tmp_path / "bn"),
                        *flags)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1


def test_help_says_what_the_cut_cache_costs():
    result = run_script("scripts.retrain", "--help")
    assert "--fine_tune_blocks" in result.stdout and "KiB" in result.stdout and "--augment_copies" in result.stdout
    listing = run_script("scripts.retrain", "--list_architectures").stdout
    row = next(line.split() for line in listing.splitlines() if line.startswith("mobilenet_1.0_224 "))
    assert row[3] == "13"  # the blocks column: how many --fine_tune_blocks can take
