"""Bottlenecks beyond the memory budget: read from disk on demand, trained on in large chunks."""
import numpy as np
import pytest

from retrain.cache.rows import within_budget
from retrain.cache.store import BottleneckCache
from retrain.training.batches import in_memory_batches, streamed_batches
from retrain.training.head import Head, TrainingConfig, train_head
from tests.test_pipeline import options

FEATURES = 8


@pytest.fixture
def cache(tmp_path):
    """Three shards of separable vectors for three classes; keys ``000..0<i>``, label ``i % 3``."""
    cache = BottleneckCache(tmp_path / "bn", "synthetic", FEATURES)
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (3, FEATURES))
    for start, stop in ((0, 100), (100, 250), (250, 300)):
        rows = np.arange(start, stop)
        cache.write_shard([f"{i:040d}" for i in rows], means[rows % 3] + rng.normal(0, 0.5, (len(rows), FEATURES)))
    return cache


def keys(count):
    return np.array([f"{i:040d}".encode("ascii") for i in range(count)], dtype="S40")


def test_reading_any_selection_from_disk_matches_the_in_memory_matrix(cache, monkeypatch):
    import retrain.cache.rows as feature_rows
    loaded = cache.load()
    rows = loaded.rows(loaded.find(keys(300)))
    matrix = rows.read()
    assert matrix.shape == (300, FEATURES) and matrix.dtype == np.float16
    monkeypatch.setattr(feature_rows, "READ_CHUNK_BYTES", 64)  # force many small slabs and sparse reads
    selection = np.random.default_rng(1).permutation(300)[:120]
    np.testing.assert_array_equal(rows[selection], matrix[selection])
    np.testing.assert_array_equal(rows.subset(selection[:7]).read(), matrix[selection[:7]])
    chunks = rows.chunks(64)
    assert sorted(np.concatenate(chunks)) == list(range(300)) and max(map(len, chunks)) == 64


def test_missing_keys_are_not_found(cache):
    loaded = cache.load()
    wanted = np.array([f"{5:040d}".encode(), b"f" * 40, f"{299:040d}".encode()], dtype="S40")
    assert list(loaded.find(wanted) >= 0) == [True, False, True]


def test_memory_budget_decides_between_memory_and_disk(cache):
    loaded = cache.load()
    rows = loaded.rows(loaded.find(keys(300)))
    assert isinstance(within_budget(rows, 1.0), np.ndarray)
    assert within_budget(rows, rows.nbytes / 2 ** 30 / 2) is rows


def in_memory_and_streamed(cache, steps, rows_per_chunk):
    """Heads trained with the same seed on all 300 vectors: read into memory, and streamed."""
    loaded = cache.load()
    rows = loaded.rows(loaded.find(keys(300)))
    labels = (np.arange(300) % 3).astype(np.int32)
    config = TrainingConfig(steps=steps, learning_rate=0.1, seed=3)
    in_memory = train_head(in_memory_batches(rows.read(), labels), FEATURES, 3, config)
    streamed = train_head(streamed_batches(rows, labels, config.draws, rows_per_chunk), FEATURES, 3, config)
    return in_memory, streamed, rows.read(), labels


def test_streaming_with_one_chunk_trains_exactly_the_in_memory_head(cache):
    in_memory, streamed, _, _ = in_memory_and_streamed(cache, steps=50, rows_per_chunk=300)
    np.testing.assert_array_equal(streamed.layers[0].weights, in_memory.layers[0].weights)


def test_streaming_in_small_chunks_learns_as_well_as_in_memory(cache):
    in_memory, streamed, matrix, labels = in_memory_and_streamed(cache, steps=200, rows_per_chunk=40)
    for head in (in_memory, streamed):
        assert np.mean(head.predict_proba(matrix).argmax(axis=1) == labels) >= 0.95


def test_with_fewer_draws_than_chunks_every_part_of_the_set_is_drawn(cache):
    loaded = cache.load()
    rows = loaded.rows(loaded.find(keys(300)))
    source = streamed_batches(rows, (np.arange(300) % 3).astype(np.int32), draws=3, rows_per_chunk=30)  # 10 chunks
    rng = np.random.default_rng(0)
    drawn = np.concatenate([source(rng).features for _ in range(3)])
    matrix = rows.read()
    positions = [int(np.flatnonzero((matrix == row).all(axis=1))[0]) for row in drawn]
    assert len(drawn) == 90 and len(set(positions)) > 80  # three draws of 30 rows
    assert len({position // 30 for position in positions}) == 10  # rows of all 10 chunks, not of 3


def test_float16_features_train_the_same_head_as_their_float32_values():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, FEATURES)).astype(np.float16)
    labels = rng.integers(0, 3, 50).astype(np.int32)
    config = TrainingConfig(steps=30, seed=1)
    half: Head = train_head(in_memory_batches(features, labels), FEATURES, 3, config)
    single: Head = train_head(in_memory_batches(features.astype(np.float32), labels), FEATURES, 3, config)
    np.testing.assert_array_equal(half.layers[0].weights, single.layers[0].weights)


def test_retrain_beyond_the_memory_budget_streams_and_still_learns(image_dir, tmp_path, tiny_model_dir):
    from retrain.pipeline import run_retrain
    messages = []
    result = run_retrain(options(image_dir, tmp_path, tiny_model_dir, memory_budget_gb=1e-7),
                         log=messages.append)
    assert any("streaming them from the cache" in m for m in messages)
    assert result.test_report is not None and result.test_report.accuracy >= 0.9


def test_every_evaluation_reaches_tensorboard(image_dir, tmp_path, tiny_model_dir):
    import tensorflow as tf

    from retrain.pipeline import run_retrain
    run_retrain(options(image_dir, tmp_path, tiny_model_dir,
                        training=TrainingConfig(steps=35, eval_step_interval=10, learning_rate=0.5, seed=0)),
                log=lambda m: None)
    steps = {}
    for events in (tmp_path / "logs").rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                steps.setdefault((events.parent.name, value.tag), []).append(event.step)
    assert steps[("train", "accuracy")] == [10, 20, 30, 35]
    assert steps[("train", "cross_entropy")] == [10, 20, 30, 35]
    assert steps[("validation", "accuracy")] == [10, 20, 30, 35]


def test_a_non_positive_memory_budget_is_one_line_user_error(tmp_path):
    from tests.test_cli import run_script
    result = run_script("scripts.retrain", "--image_dir", str(tmp_path), "--memory_budget_gb", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --memory_budget_gb must be positive, got 0.0"


def test_vectors_read_back_are_the_ones_written_in_any_key_order(tmp_path):
    cache = BottleneckCache(tmp_path / "bn", "synthetic", FEATURES)
    written = np.random.default_rng(2).normal(0, 1, (50, FEATURES)).astype(np.float16)
    cache.write_shard([f"{i:040d}" for i in range(30)], written[:30])
    cache.write_shard([f"{i:040d}" for i in range(30, 50)], written[30:])
    for order in (np.arange(50), np.random.default_rng(3).permutation(50)):
        wanted = np.insert(keys(50)[order], 7, b"f" * 40)  # and one key that is not cached
        usable, rows = cache.load().read_features(wanted, memory_budget_gb=0)
        assert list(usable) == [i for i in range(51) if i != 7]
        np.testing.assert_array_equal(rows.read(), written[order])
        np.testing.assert_array_equal(rows.read(np.arange(49, -1, -1)), written[order][::-1])


def test_rows_read_in_a_shuffled_or_repeated_order_come_back_in_that_order(tmp_path):
    # Consecutive rows are read straight into place; a swap or a repeat among them must not be.
    cache = BottleneckCache(tmp_path / "bn", "synthetic", FEATURES)
    written = np.arange(10 * FEATURES, dtype=np.float16).reshape(10, FEATURES)
    cache.write_shard([f"{i:040d}" for i in range(10)], written)
    rows = cache.load().rows(np.arange(10))
    for positions in ([0, 2, 1, 3], [0, 0, 2], [4, 5, 6], [3, 3, 4, 5]):
        np.testing.assert_array_equal(rows.read(positions), written[positions])
