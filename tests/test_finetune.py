"""Fine-tuning the top blocks from cached cut activations, on a tiny generated block backbone."""
from __future__ import annotations

import re

import numpy as np
import pytest

from retrain.cache.bottlenecks import BottleneckCache, get_bottlenecks
from retrain.data.images import labels_of, split_images
from retrain.errors import UserError
from retrain.export.frozen_graph import export_frozen_graph, sidecar_for
from retrain.models.backbones import load_backbone, load_graph_def
from retrain.models.cut import cut_backbone
from retrain.training.early_stopping import loss_and_accuracy
from retrain.training.finetune import FineTuneConfig, fine_tune, pooled_features
from retrain.training.head import Head
from tests.conftest import TINY_SIZE
from tests.tiny_blocks import TINY_BLOCKS, tiny_blocks_model_dir, tiny_blocks_spec


@pytest.fixture
def block_backbone(tmp_path):
    model_dir = tiny_blocks_model_dir(tmp_path / "models")
    return load_backbone(tiny_blocks_spec(), model_dir), model_dir


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)


def test_lower_and_top_together_give_the_whole_backbones_features(block_backbone):
    backbone, model_dir = block_backbone
    images = _images(5)
    for blocks in range(1, TINY_BLOCKS + 1):
        cut = cut_backbone(backbone, blocks, model_dir)
        rows = cut.lower(images)
        assert rows.shape == (5, int(np.prod(cut.top.cut_shape)))
        np.testing.assert_allclose(pooled_features(cut.top, rows), backbone(images), atol=1e-5)
        # weights and batch-norm scales/offsets of each block train; the moving statistics do not
        assert len(cut.top.variables) == 6 * blocks
        assert not any("moving_" in v.name for v in cut.top.variables)
        assert cut.lower.spec.cache_id != backbone.spec.cache_id


def test_the_cut_cache_is_keyed_by_cut_point(block_backbone):
    backbone, model_dir = block_backbone
    ids = {cut_backbone(backbone, blocks, model_dir).lower.spec.cache_id for blocks in (1, 2, 3)}
    assert len(ids) == 3


@pytest.mark.parametrize("blocks", [4, 99])
def test_more_blocks_than_the_architecture_has_says_how_many(block_backbone, blocks):
    backbone, model_dir = block_backbone
    with pytest.raises(UserError, match=f"^fine_tune_blocks={blocks} .* has {TINY_BLOCKS} blocks"):
        cut_backbone(backbone, blocks, model_dir)


def test_a_backbone_without_block_boundaries_cannot_be_fine_tuned(block_backbone):
    backbone, model_dir = block_backbone
    backbone.spec = tiny_blocks_spec(block_cuts=())
    with pytest.raises(UserError, match="no block boundaries"):
        cut_backbone(backbone, 1, model_dir)


def _trained(backbone, model_dir, blocks: int, seed: int, rows=None, labels=None):
    cut = cut_backbone(backbone, blocks, model_dir)
    if rows is None:
        rows = cut.lower(_images(24, seed=7)).astype(np.float16)
        labels = (np.arange(24) % 3).astype(np.int32)
    head = Head.linear(np.zeros((8, 3), np.float32), np.zeros(3, np.float32))
    tuned = fine_tune(cut.top, head, rows, labels, FineTuneConfig(blocks, 1e-2, 12, 8), seed, log=lambda _: None)
    return cut, tuned


def test_fine_tuning_trains_the_top_blocks_and_exports_an_ordinary_frozen_graph(block_backbone, tmp_path):
    from retrain.label.labeler import GraphLabeler
    backbone, model_dir = block_backbone
    cut, head = _trained(backbone, model_dir, 2, seed=0)
    tuned = cut.top.tuned_backbone()
    images = _images(4, seed=3)
    assert not np.allclose(tuned(images), backbone(images))
    assert np.abs(head.layers[0].weights).sum() > 0
    graph = tmp_path / "tuned.pb"
    export_frozen_graph(tuned, head, graph)
    original = {n.name: n.attr["value"] for n in load_graph_def(model_dir / "tiny_v1" / "frozen_graph.pb").node}
    exported = {n.name.rsplit("PartitionedCall/", 1)[-1]: n.attr["value"] for n in load_graph_def(graph).node}
    assert {name for name in original if name.startswith("Tiny/")} <= set(exported)
    changed = {name for name, value in exported.items() if name in original and value != original[name]}
    assert changed and all(name.startswith(("Tiny/Conv2d_2", "Tiny/Conv2d_3")) for name in changed)
    assert not any("moving_" in name for name in changed)
    sidecar_for(tuned, ["a", "b", "c"]).write(graph)
    labeler = GraphLabeler(graph)  # label_image's loader: nothing in the graph says it was fine-tuned
    np.testing.assert_allclose(labeler.predict(images), head.predict_proba(tuned(images)), rtol=1e-4, atol=1e-5)


def test_fine_tuning_is_bit_identical_with_the_same_seed(block_backbone, tmp_path):
    backbone, model_dir = block_backbone
    graphs = []
    for run in range(2):
        cut, head = _trained(backbone, model_dir, 3, seed=5)
        export_frozen_graph(cut.top.tuned_backbone(), head, tmp_path / f"run{run}.pb")
        graphs.append((tmp_path / f"run{run}.pb").read_bytes())
    assert graphs[0] == graphs[1]
    cut, head = _trained(backbone, model_dir, 3, seed=6)
    export_frozen_graph(cut.top.tuned_backbone(), head, tmp_path / "other.pb")
    assert (tmp_path / "other.pb").read_bytes() != graphs[0]


def test_fine_tuning_streams_rows_beyond_the_memory_budget(block_backbone, image_dir, tmp_path):
    """Rows left on disk (FeatureRows) train the same way as rows in memory."""
    backbone, model_dir = block_backbone
    records = split_images(image_dir, 0, 0)
    labels = labels_of(records)
    cut = cut_backbone(backbone, 1, model_dir)
    cache = BottleneckCache(tmp_path / "cache", cut.lower.spec.cache_id, cut.lower.feature_size)
    streamed = get_bottlenecks([r.path for r in records], cut.lower, TINY_SIZE, cache, memory_budget_gb=1e-9,
                               log=lambda _: None)
    assert not isinstance(streamed.features, np.ndarray)
    targets = np.array([labels.index(r.label) for r in records], np.int32)
    head = Head.linear(np.zeros((8, 3), np.float32), np.zeros(3, np.float32))
    tuned = fine_tune(cut.top, head, streamed.features, targets, FineTuneConfig(1, 1e-2, 6, 4), 0,
                      log=lambda _: None, rows_per_chunk=10)
    assert np.abs(tuned.layers[0].weights).sum() > 0


@pytest.mark.parametrize("field, value", [("blocks", -1), ("steps", 0), ("batch_size", 0), ("learning_rate", 0)])
def test_bad_fine_tune_options_are_user_errors(field, value):
    with pytest.raises(UserError, match="^fine_tune_"):
        FineTuneConfig(**{"blocks": 2, field: value})


def _validation_losses(lines: list[str]) -> list[float]:
    """The validation losses logged before fine-tuning and at each progress line."""
    return [float(re.search(r"validation cross entropy = ([\d.]+)", line).group(1)) for line in lines
            if line.startswith(("Before fine-tuning", "Fine-tune step"))]


def _coloured(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images that can be learnt: each class a noisy colour of its own."""
    labels = (np.arange(count) % 3).astype(np.int32)
    colours = np.array([(200, 40, 40), (40, 190, 60), (50, 60, 210)])[labels][:, None, None, :]
    noise = np.random.default_rng(seed).normal(0, 60, (count, TINY_SIZE, TINY_SIZE, 3))
    return np.clip(colours + noise, 0, 255).astype(np.uint8), labels


def test_fine_tuning_scores_the_whole_validation_set_and_early_stopping_restores_the_best_step(block_backbone):
    """The validation loss falls, then rises as the blocks fit 6 wrong labels: the best step is what comes back."""
    backbone, model_dir = block_backbone
    (train_images, train_labels), (validation_images, validation_labels) = _coloured(30, 7), _coloured(12, 8)
    train_labels[:6] = (train_labels[:6] + 1) % 3
    head = Head.linear(np.zeros((8, 3), np.float32), np.zeros(3, np.float32))
    config = FineTuneConfig(2, 0.03, 40, 8)
    runs = []
    for patience in (None, 2):
        cut = cut_backbone(backbone, 2, model_dir)  # fresh variables, the same seed: the same steps
        validation = (cut.lower(validation_images).astype(np.float16), validation_labels)
        lines: list[str] = []
        tuned = fine_tune(cut.top, head, cut.lower(train_images).astype(np.float16), train_labels, config, 0,
                          log=lines.append, validation=validation, patience=patience)
        runs.append((cut, validation, tuned, lines, _validation_losses(lines)))
    *_, lines, losses = runs[0]
    scores = [line for line in lines if not line.startswith("Fine-tuning plan:")][:11]  # the plan has no score
    assert len(losses) == 11 and all("(N=12)" in line for line in scores)
    assert lines[-1].startswith("Validation accuracy: ") and "% after fine-tuning (N=12)" in lines[-1]
    assert min(losses) < losses[-1]  # without patience the last step is kept, and here it is not the best

    cut, validation, tuned, lines, kept = runs[1]
    best = int(np.argmin(kept))
    assert kept == losses[:len(kept)] and len(kept) == best + 3 < len(losses)  # 2 scores without improvement
    assert best > 0 and f"restored the weights of step {best * 4} " in lines[-2]
    reloaded, _ = loss_and_accuracy(tuned.predict_proba, pooled_features(cut.top, validation[0]), validation[1])
    assert reloaded == pytest.approx(losses[best], abs=1e-4)  # blocks and head both rolled back


def test_fine_tuning_that_only_hurts_is_undone_by_early_stopping(block_backbone):
    """Random labels and an overshooting learning rate: no step beats the untouched blocks, which come back."""
    backbone, model_dir = block_backbone
    cut = cut_backbone(backbone, 2, model_dir)
    untouched = [variable.numpy() for variable in cut.top.variables]
    rows = cut.lower(_images(30, seed=7)).astype(np.float16)
    labels = (np.arange(30) % 3).astype(np.int32)
    head = Head.linear(np.zeros((8, 3), np.float32), np.zeros(3, np.float32))
    lines: list[str] = []
    tuned = fine_tune(cut.top, head, rows[:20], labels[:20], FineTuneConfig(2, 0.3, 40, 8), 0, log=lines.append,
                      validation=(rows[20:], labels[20:]), patience=2)
    losses = _validation_losses(lines)
    assert len(losses) == 3 and losses[0] < min(losses[1:])
    assert "restored the weights from before fine-tuning" in lines[-2]
    assert all(np.array_equal(v.numpy(), w) for v, w in zip(cut.top.variables, untouched))
    assert np.array_equal(tuned.layers[0].weights, head.layers[0].weights)
