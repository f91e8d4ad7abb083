import os
import shutil
import sys
import threading

import numpy as np
import pytest

from retrain.cache.bottlenecks import get_bottlenecks
from retrain.cache.store import BottleneckCache
from retrain.models.backbones import load_backbone
from tests.conftest import make_image, tiny_spec


@pytest.fixture
def backbone(tiny_model_dir):
    return load_backbone(tiny_spec(), tiny_model_dir)


def run(paths, backbone, bottleneck_dir, messages=None):
    cache = BottleneckCache(bottleneck_dir, backbone.spec.cache_id, backbone.feature_size)
    return get_bottlenecks(paths, backbone, backbone.input_size, cache, batch_size=4,
                           log=(messages.append if messages is not None else lambda m: None))


def image_paths(image_dir):
    return sorted(image_dir.rglob("*.jpg"))


def test_second_run_reuses_every_vector_and_gives_the_same_features(image_dir, backbone, tmp_path):
    paths = image_paths(image_dir)
    first = run(paths, backbone, tmp_path / "bn")
    messages = []
    second = run(paths, backbone, tmp_path / "bn", messages)
    assert (first.computed, first.reused) == (len(paths), 0)
    assert (second.computed, second.reused) == (0, len(paths))
    assert f"{len(paths)} of {len(paths)} images found in the cache" in messages[0]
    np.testing.assert_allclose(second.features, first.features, rtol=1e-3, atol=1e-3)


def test_cached_vectors_match_a_fresh_backbone_call(image_dir, backbone, tmp_path):
    from retrain.data.decode import load_rgb
    paths = image_paths(image_dir)[:5]
    result = run(paths, backbone, tmp_path / "bn")
    direct = backbone(np.stack([load_rgb(p, backbone.input_size, backbone.input_size) for p in paths]))
    np.testing.assert_allclose(result.features, direct, rtol=1e-2, atol=1e-3)


def test_edited_image_is_recomputed_and_renamed_one_is_not(image_dir, backbone, tmp_path):
    paths = image_paths(image_dir)
    run(paths, backbone, tmp_path / "bn")
    make_image(paths[0], (0, 0, 0), seed=999)  # edit in place: new content, same name
    renamed = paths[1].with_name("renamed.jpg")
    shutil.move(paths[1], renamed)
    paths = image_paths(image_dir)
    result = run(paths, backbone, tmp_path / "bn")
    assert result.computed == 1 and result.reused == len(paths) - 1


def test_new_architecture_gets_its_own_cache(image_dir, tiny_model_dir, tmp_path):
    paths = image_paths(image_dir)[:6]
    first = load_backbone(tiny_spec(), tiny_model_dir)
    other = load_backbone(tiny_spec(name="tiny_other", feature_tensor="Relu:0", feature_size=0), tiny_model_dir)
    assert first.spec.cache_id != other.spec.cache_id
    run(paths, first, tmp_path / "bn")
    result = run(paths, other, tmp_path / "bn")
    assert result.computed == len(paths) and result.reused == 0
    assert len(list((tmp_path / "bn").iterdir())) == 2


def test_duplicate_images_are_computed_once(tmp_path, backbone):
    a = make_image(tmp_path / "x" / "a.jpg", (1, 2, 3), seed=1)
    b = tmp_path / "x" / "b.jpg"
    shutil.copy(a, b)
    result = run([a, b], backbone, tmp_path / "bn")
    assert result.computed == 1 and list(result.usable) == [0, 1]


def test_unreadable_images_are_skipped_with_a_warning(image_dir, backbone, tmp_path):
    bad = image_dir / "red" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    messages = []
    result = run(image_paths(image_dir), backbone, tmp_path / "bn", messages)
    assert [p for p, _ in result.unreadable] == [bad]
    assert image_paths(image_dir).index(bad) not in result.usable
    assert sum("broken.jpg" in m for m in messages) == 1


def test_many_shards_are_merged_into_one(image_dir, backbone, tmp_path, monkeypatch):
    import retrain.cache.bottlenecks as bottlenecks
    import retrain.cache.store as cache_store
    monkeypatch.setattr(bottlenecks, "FLUSH_EVERY_IMAGES", 2)
    monkeypatch.setattr(cache_store, "MERGE_WHEN_SHARDS_EXCEED", 3)
    paths = image_paths(image_dir)
    run(paths, backbone, tmp_path / "bn")
    cache = BottleneckCache(tmp_path / "bn", backbone.spec.cache_id, backbone.feature_size)
    assert len(cache.shard_paths()) == 1
    assert len(cache.load()) == len(paths)


def test_a_cold_run_reads_each_shard_once_to_verify_it(image_dir, backbone, tmp_path, monkeypatch):
    # Shards are immutable: what this run wrote or merged needs no second checksum pass; a new run checks all.
    import retrain.cache.bottlenecks as bottlenecks
    import retrain.cache.store as cache_store
    monkeypatch.setattr(bottlenecks, "FLUSH_EVERY_IMAGES", 2)
    monkeypatch.setattr(cache_store, "MERGE_WHEN_SHARDS_EXCEED", 3)
    checked = []
    check = cache_store._check_file_digest
    monkeypatch.setattr(cache_store, "_check_file_digest", lambda path: (checked.append(path.name), check(path)))
    paths = image_paths(image_dir)
    run(paths, backbone, tmp_path / "bn")
    assert checked == []
    run(paths, backbone, tmp_path / "bn")
    assert len(checked) == 1 and len(set(checked)) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priorities are Linux's")
def test_decoding_threads_yield_the_cpu_and_the_caller_keeps_its_priority(image_dir, monkeypatch):
    import retrain.data.decode as decoding
    seen = []
    decode = decoding.load_rgb

    def recording_decode(*args):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return decode(*args)

    monkeypatch.setattr(decoding, "load_rgb", recording_decode)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    batches = list(decoding.decoded_batches(image_paths(image_dir), 8, 8, batch_size=2))
    assert sum(len(good) for good, _, _ in batches) == len(seen) > 0
    assert set(seen) == {19}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
