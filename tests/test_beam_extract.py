"""The Beam pipeline (issue 11): the same cache as retrain, filled on Beam's local runner.

The pipeline runs on the default local runner (one worker process per core)
over generated images and tiny backbones; retrain then trains on that cache.
Fault tests SIGKILL the whole local runner mid-way and run it again, and
replay every bundle (as runners do on retries).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from retrain.cache.bottlenecks import get_bottlenecks
from retrain.cache.store import BottleneckCache, rounding_error
from retrain.data.decode import load_rgb
from retrain.files import DEFAULT_MODEL_DIR, hash_files
from retrain.models.architectures import DEFAULT_ARCHITECTURE, get_architecture, tfhub_spec
from retrain.models.backbones import load_backbone
from retrain.pipeline import RetrainOptions, run_retrain
from retrain.scale import beam_extract
from retrain.scale.beam_extract import ExtractJob
from retrain.scale.beam_launch import run_extract
from retrain.training.head import TrainingConfig
from tests.conftest import FLOWERS, PROJECT, make_dataset, make_image, tiny_spec
from tests.test_backbones import save_tiny_hub_module
from tests.test_cli import run_script
from tests.test_pipeline import options

HUB_SIZE = 16

# Loaded first in every process of a run (launcher and Beam workers): small shards and slow decoding, so a kill
# lands between shard writes.
SLOW_SITECUSTOMIZE = """
import time
import retrain.cache.bottlenecks, retrain.data.decode
retrain.cache.bottlenecks.FLUSH_EVERY_IMAGES = 2
_load_rgb = retrain.data.decode.load_rgb
def _slow_load_rgb(*args, **kwargs):
    time.sleep(0.25)
    return _load_rgb(*args, **kwargs)
retrain.data.decode.load_rgb = _slow_load_rgb
"""


def shard_rows(bottleneck_dir: Path) -> tuple[list[bytes], dict[bytes, np.ndarray]]:
    """Every key row in every shard (duplicates kept) and the vectors by key; fails on a damaged shard."""
    (folder,) = [p for p in bottleneck_dir.iterdir() if p.is_dir()]
    damaged = []
    feature_size = None
    keys, vectors = [], {}
    for path in sorted(folder.glob("shard-*.h5")):
        with h5py.File(path, "r") as shard:
            feature_size = shard.attrs["feature_size"]
            keys += list(shard["keys"][...])
            vectors.update(zip(shard["keys"][...], shard["features"][...]))
    BottleneckCache(bottleneck_dir, folder.name, feature_size).load(log=damaged.append).close()
    assert damaged == []
    return keys, vectors


def single_machine_vectors(image_dir: Path, tmp_path: Path, model_dir: Path) -> dict[bytes, np.ndarray]:
    """The vectors retrain itself caches for the same images."""
    run_retrain(options(image_dir, tmp_path / "single", model_dir, bottleneck_dir=str(tmp_path / "single_bn")),
                log=lambda message: None)
    return shard_rows(tmp_path / "single_bn")[1]


@pytest.fixture
def worker_path(monkeypatch):
    """Beam's worker processes import retrain from this checkout."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT))


def test_retrain_finds_every_beam_vector_and_writes_the_same_graph(image_dir, tmp_path, tiny_model_dir, worker_path):
    job = ExtractJob(str(image_dir), tiny_spec(), str(tiny_model_dir), str(tmp_path / "beam_bn"))
    summary = run_extract(job, log=lambda message: None)
    assert (summary.images, summary.found_in_cache, summary.computed, summary.unreadable) == (36, 0, 36, 0)

    messages = []
    run_retrain(options(image_dir, tmp_path / "from_beam", tiny_model_dir, bottleneck_dir=str(tmp_path / "beam_bn")),
                log=messages.append)
    assert any(m.startswith("Bottlenecks: 36 of 36 images found in the cache") for m in messages)
    run_retrain(options(image_dir, tmp_path / "single", tiny_model_dir), log=lambda message: None)
    assert (tmp_path / "from_beam" / "g.pb").read_bytes() == (tmp_path / "single" / "g.pb").read_bytes()


def test_replayed_bundles_leave_no_duplicate_vectors(image_dir, tmp_path, tiny_model_dir, monkeypatch):
    """Every bundle runs twice (``--direct_runner_bundle_repeat``), in process so small shards can be forced."""
    monkeypatch.setattr(beam_extract, "FLUSH_EVERY_IMAGES", 5)
    job = ExtractJob(str(image_dir), tiny_spec(), str(tiny_model_dir), str(tmp_path / "beam_bn"),
                     bottleneck_batch_size=4)
    run_extract(job, ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--direct_runner_bundle_repeat=1"],
                log=lambda message: None)
    keys, vectors = shard_rows(tmp_path / "beam_bn")
    assert len(keys) == len(set(keys)) == 36
    expected = single_machine_vectors(image_dir, tmp_path, tiny_model_dir)
    assert sorted(vectors) == sorted(expected)
    for key, vector in expected.items():
        np.testing.assert_array_equal(vectors[key], vector)


def test_object_store_paths_write_and_read_shards_through_beam_filesystems(tmp_path, monkeypatch):
    """The gs:// / s3:// code paths (upload a finished shard, read keys and images through handles), here on
    local files: Beam's filesystems treat them alike, and no bucket is reachable from the test machine."""
    image = make_image(tmp_path / "photo.jpg", (200, 40, 40), seed=0)
    monkeypatch.setattr(beam_extract, "is_local", lambda path: False)
    vectors = np.arange(12, dtype=np.float32).reshape(2, 6)
    shard = beam_extract.write_shard(str(tmp_path / "bn"), "cache", 6, ["a" * 40, "b" * 40], vectors)
    assert list(beam_extract._shard_keys(shard)) == [("a" * 40, True), ("b" * 40, True)]
    loaded = BottleneckCache(tmp_path / "bn", "cache", 6).load(log=pytest.fail)
    np.testing.assert_array_equal(loaded.rows(np.arange(2)).read(), vectors)
    loaded.close()
    [(_, pixels)] = beam_extract._decode(("k", [str(image)]), 16)
    np.testing.assert_array_equal(pixels, load_rgb(image, 16, 16))


def extract_cli(images: Path, hub: Path, bottleneck_dir: Path, env: dict, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "scripts.extract_bottlenecks", "--image_dir", str(images), "--tfhub_module",
               str(hub), "--tfhub_image_size", str(HUB_SIZE), "--bottleneck_dir", str(bottleneck_dir),
               "--bottleneck_batch_size", "2"]
    return subprocess.Popen(command, cwd=PROJECT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **popen)


def finished(run: subprocess.Popen) -> str:
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-2000:]
    return stdout


def test_killed_run_resumes_computing_only_what_is_missing(tmp_path):
    images = make_dataset(tmp_path / "images", per_class=8)
    (images / "red" / "broken.jpg").write_bytes(b"not an image")
    shutil.copy(images / "red" / "broken.jpg", images / "green" / "broken copy.jpg")
    hub = tmp_path / "hub"
    save_tiny_hub_module(hub)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_SITECUSTOMIZE)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=f"{site}:{PROJECT}")
    bottleneck_dir = tmp_path / "bn"

    runner = extract_cli(images, hub, bottleneck_dir, env, start_new_session=True)
    give_up = time.monotonic() + 240
    while len(list(bottleneck_dir.glob("*/shard-*.h5"))) < 2 and time.monotonic() < give_up:
        assert runner.poll() is None, runner.communicate()[1][-2000:]
        time.sleep(0.05)
    os.killpg(runner.pid, signal.SIGKILL)  # the launcher and its worker processes: the whole local runner
    runner.communicate()
    kept, _ = shard_rows(bottleneck_dir)
    assert 0 < len(kept) < 24 and len(set(kept)) == len(kept)

    normal = dict(env, PYTHONPATH=str(PROJECT))
    stdout = finished(extract_cli(images, hub, bottleneck_dir, normal))
    assert f"Bottlenecks: {len(kept)} of 26 images found in the cache" in stdout
    assert f"{24 - len(kept)} computed" in stdout and ", 2 unreadable" in stdout
    assert "warning: skipping unreadable image" in stdout and f"{images}/red/broken.jpg" in stdout
    assert "Skipped 2 unreadable image(s) of 26" in stdout
    keys, vectors = shard_rows(bottleneck_dir)
    assert len(keys) == len(set(keys)) == 24

    backbone = load_backbone(tfhub_spec(str(hub), HUB_SIZE), tmp_path / "models")
    reference = BottleneckCache(tmp_path / "reference_bn", backbone.spec.cache_id, backbone.feature_size)
    get_bottlenecks(sorted(images.rglob("*.jpg")), backbone, HUB_SIZE, reference, log=lambda message: None)
    _, expected = shard_rows(tmp_path / "reference_bn")
    assert [folder.name for folder in bottleneck_dir.iterdir()] == [backbone.spec.cache_id]  # the folder retrain reads
    assert sorted(vectors) == sorted(expected)
    for key, vector in expected.items():
        np.testing.assert_array_equal(vectors[key], vector)


HIDE_BEAM = "import sys; sys.modules['apache_beam'] = None; from retrain.cli.extract_bottlenecks import cli; cli()"


@pytest.mark.parametrize("case, message", [
    ("no images", "no images under --image_dir"),
    ("unknown architecture", "unknown --architecture 'alexnet'"),
    ("unwritable cache", "--bottleneck_dir: cannot write in"),
    ("beam not installed", "Apache Beam is not installed; install the extra with: pip install 'retrain[beam]'"),
])
def test_bad_input_is_one_line_and_exit_code_2(case, message, tmp_path):
    images = tmp_path / "images"
    if case != "no images":
        make_image(images / "a" / "one.jpg", (200, 40, 40), seed=0)
    images.mkdir(exist_ok=True)
    (tmp_path / "a_file").write_text("")
    args = ["--image_dir", str(images), "--bottleneck_dir",
            str(tmp_path / "a_file" / "bn" if case == "unwritable cache" else tmp_path / "bn")]
    if case == "unknown architecture":
        args += ["--architecture", "alexnet"]
    if case == "beam not installed":
        result = subprocess.run([sys.executable, "-c", HIDE_BEAM, *args], cwd=PROJECT, capture_output=True,
                                text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    else:
        result = run_script("scripts.extract_bottlenecks", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [f"error: {result.stderr.splitlines()[0][7:]}"]
    assert message in result.stderr


def test_retrain_never_imports_apache_beam():
    code = ("import sys, retrain.pipeline, retrain.label.labeler, retrain.label.relabel, retrain.label.evaluation, "
            "scripts.retrain, scripts.label_image, scripts.relabel, scripts.evaluate; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# How far apart the same backbone puts a float32 feature when it sums in another order (other batches, other
# threads): a few float32 units of the largest activations (ReLU6, so at most 6), seen 2.4e-7 apart near zero.
BACKBONE_REORDERING = 8 * float(np.spacing(np.float32(6)))


def rewritten_by_retrain(bottleneck_dir: Path, cache_id: str, vectors: dict[bytes, np.ndarray]) -> Path:
    """A cache holding ``vectors`` (by key), written by retrain's own writer."""
    features = np.stack(list(vectors.values()))
    BottleneckCache(bottleneck_dir, cache_id, features.shape[1]).write_shard([key.decode() for key in vectors],
                                                                             features)
    return bottleneck_dir


@pytest.mark.integration
def test_real_flowers_through_beam_give_retrain_the_same_vectors_and_graph(flowers_retrained, tmp_path,
                                                                           worker_path):
    """Beam's vectors are retrain's within the cache's float16 rounding, and train the same graph.

    Not bit for bit: Beam's workers run the backbone on other batches and threads than retrain, so a float32
    value can come out a few units apart (``BACKBONE_REORDERING``) and round to a neighbouring float16. So the
    vectors agree within that and the cache's rounding, and the graph trained from Beam's cache is compared with
    one trained from retrain's own writer holding the same vectors: how Beam writes shards changes nothing.
    """
    spec = get_architecture(DEFAULT_ARCHITECTURE)
    job = ExtractJob(str(FLOWERS), spec, str(DEFAULT_MODEL_DIR), str(tmp_path / "beam_bn"))
    summary = run_extract(job, log=lambda message: None)
    files = [p for p in FLOWERS.rglob("*") if p.is_file()]
    total = len(files)
    assert (summary.images, summary.computed, summary.unreadable) == (total, len(set(hash_files(files))), 0)
    _, from_beam = shard_rows(tmp_path / "beam_bn")
    _, single = shard_rows(flowers_retrained.out / "bottlenecks")
    assert sorted(from_beam) == sorted(single)
    for key, vector in single.items():
        apart = np.abs(from_beam[key].astype(np.float32) - vector.astype(np.float32))
        assert np.all(apart <= rounding_error(from_beam[key]) + rounding_error(vector) + BACKBONE_REORDERING), key

    graphs, messages = [], []
    same_vectors = rewritten_by_retrain(tmp_path / "same_vectors_bn", spec.cache_id, from_beam)
    for name, bottleneck_dir in (("beam", tmp_path / "beam_bn"), ("single", same_vectors)):
        out = tmp_path / name
        run_retrain(RetrainOptions(image_dir=str(FLOWERS), architecture=spec, output_graph=str(out / "g.pb"),
                                   output_labels=str(out / "labels.txt"), summaries_dir=str(out / "logs"),
                                   bottleneck_dir=str(bottleneck_dir), training=TrainingConfig(steps=200, seed=3)),
                    log=messages.append)
        graphs.append((out / "g.pb").read_bytes())
    assert sum(m.startswith(f"Bottlenecks: {total} of {total} images found in the cache") for m in messages) == 2
    assert graphs[0] == graphs[1]
