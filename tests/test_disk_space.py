"""A cache that cannot fit on its disk stops the run before the first image is decoded, in one line."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import retrain.cache.bottlenecks as bottlenecks
import retrain.cache.disk_space as disk_space
import retrain.cache.store as store
from retrain.cache.disk_space import check_cache_fits
from retrain.cache.store import BottleneckCache
from retrain.errors import UserError, command_line_spelling
from retrain.pipeline import run_retrain
from tests.conftest import PROJECT
from tests.test_finetune_pipeline import options
from tests.tiny_blocks import tiny_blocks_model_dir

MB = 2 ** 20


def _disk_with(monkeypatch, free: int, module=disk_space) -> None:
    monkeypatch.setattr(module, "free_bytes", lambda folder: free)


def test_a_cache_too_big_for_the_disk_says_what_it_needs_what_is_free_and_how_to_proceed(tmp_path, monkeypatch):
    _disk_with(monkeypatch, 40 * MB)
    cache = BottleneckCache(tmp_path / "bn", "cut", 4)
    with command_line_spelling(), pytest.raises(UserError) as error:
        check_cache_fits(cache, 295 * MB, copies=4, blocks=4)
    assert str(error.value) == (
        f"the cache needs 295 MB more on the disk of {tmp_path / 'bn'}, which has 40 MB free: give --bottleneck_dir "
        "a folder on a disk with more room, or fewer --augment_copies (now 4), or fewer --fine_tune_blocks (now 4; 0 "
        "caches one pooled vector per image)")
    check_cache_fits(cache, 40 * MB, copies=4, blocks=4)  # exactly fits


def test_what_is_cached_already_counts_as_written(tmp_path, monkeypatch):
    cache = BottleneckCache(tmp_path / "bn", "cut", 1024)
    cache.write_shard([f"{i:040x}" for i in range(512)], np.ones((512, 1024), np.float32))
    held = sum(path.stat().st_size for path in cache.shard_paths())
    _disk_with(monkeypatch, 10)
    check_cache_fits(cache, held, copies=0, blocks=0)  # a warm run on a full disk still runs
    with pytest.raises(UserError, match=r"needs 1\.0 MB more .* \(1\.0 MB of its 2\.0 MB are cached already\), "
                                        r"which has 0\.0 MB"):
        check_cache_fits(cache, held + MB, copies=0, blocks=0)


def test_the_run_stops_before_decoding_any_image(image_dir, tmp_path, monkeypatch):
    _disk_with(monkeypatch, MB // 10)

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")
    monkeypatch.setattr(bottlenecks, "decoded_batches", no_decoding)
    messages = []
    with pytest.raises(UserError, match=r"the cache needs \d\.\d MB more .* which has 0\.1 MB free"):
        run_retrain(options(image_dir, tmp_path / "out", tiny_blocks_model_dir(tmp_path / "models")),
                    log=messages.append)
    assert messages[-1].startswith("Cache: ")  # the estimate, then the stop


def test_no_room_to_merge_leaves_the_shards_as_they_are(tmp_path, monkeypatch):
    cache = BottleneckCache(tmp_path / "bn", "pooled", 4)
    for shard in range(store.MERGE_WHEN_SHARDS_EXCEED + 1):
        cache.write_shard([f"{shard:040x}"], np.full((1, 4), shard, np.float32))
    _disk_with(monkeypatch, 0, store)
    messages = []
    assert not cache.merge_shards(messages.append)
    assert len(cache.shard_paths()) == store.MERGE_WHEN_SHARDS_EXCEED + 1
    assert len(messages) == 1 and messages[0].startswith(
        f"warning: not merging {store.MERGE_WHEN_SHARDS_EXCEED + 1} cache shards: the merged copy needs 0.1 MB and the "
        "disk has 0.0 MB free; the cache works unmerged")
    assert len(cache.load()) == store.MERGE_WHEN_SHARDS_EXCEED + 1


def test_the_command_line_prints_one_error_line_and_exits_2_before_any_image_is_decoded(tmp_path):
    driver = f"""
import sys
import retrain.cache.bottlenecks as bottlenecks, retrain.cache.disk_space as disk_space
from retrain.cli.common import run_cli
from retrain.cli.retrain import main
disk_space.free_bytes = lambda folder: 10 * 2 ** 20  # a 10 MB disk
def no_decoding(*args, **kwargs):
    raise AssertionError("an image was decoded")
bottlenecks.decoded_batches = no_decoding
run_cli(main, ["--image_dir", "examples/flower_photos", "--fine_tune_blocks", "1", "--augment_copies", "4",
               "--bottleneck_dir", {str(tmp_path / 'bn')!r}, "--output_graph", {str(tmp_path / 'g.pb')!r},
               "--output_labels", {str(tmp_path / 'l.txt')!r}, "--summaries_dir", {str(tmp_path / 'logs')!r}])
"""
    result = subprocess.run([sys.executable, "-c", driver], cwd=PROJECT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: the cache needs 37 MB more on the disk of {tmp_path / 'bn'}, which has "
                                    "10 MB free: give --bottleneck_dir a folder on a disk with more room, or fewer "
                                    "--augment_copies (now 4), or fewer --fine_tune_blocks (now 1"), result.stderr
    assert "MB on disk at most" in result.stdout and "Bottlenecks:" not in result.stdout
