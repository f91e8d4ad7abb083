"""Reliability #2-#6: kill real processes, damage real cache files, run two at once, give bad input.

The subprocess tests run the real CLI on a tiny TF-Hub-style SavedModel
backbone (``--tfhub_module``) and compare everything with one uninterrupted
run: with ``--random_seed``, an interrupted-and-resumed run and two
concurrent runs must give the very same graph bytes and cached vectors.
"""
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import retrain.cache.bottlenecks as bottlenecks
import retrain.cache.store as cache_store
from retrain.cache.bottlenecks import get_bottlenecks
from retrain.cache.store import SHARD_HEADER_BYTES, SHARD_MAGIC, BottleneckCache
from retrain.cli.common import run_cli
from retrain.data.decode import load_rgb
from retrain.files import atomic_write
from retrain.models.backbones import load_backbone
from tests.conftest import PROJECT, make_dataset, make_image, tiny_spec
from tests.test_backbones import save_tiny_hub_module

HUB_SIZE, HUB_FEATURES = 16, 6
ODD_NAMES = ["with space.jpg", "ünïcødé 花.jpg", "$(touch pwned); rm -rf ~ `x` 'q\" & | > <.jpg"]
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(PROJECT)}

# The CLI with many small shards and slower decoding, so a kill lands between flushes. Modes: "run";
# "pause_export" stops for good after writing the output graph's temporary file, just before renaming it into
# place; "together:<folder>" starts decoding only once a partner process has reached the same point.
DRIVER = r'''
import contextlib, os, pathlib, sys, threading, time
import retrain.cache.bottlenecks as bottlenecks
import retrain.data.decode as decoding
import retrain.export.frozen_graph as export
from retrain.cli.retrain import cli

mode = sys.argv.pop(1)
barrier = pathlib.Path(mode.partition(":")[2]) if mode.startswith("together:") else None
barrier_lock = threading.Lock()

def wait_for_partner():
    with barrier_lock:
        marker = barrier / str(os.getpid())
        if not marker.exists():
            marker.touch()
            give_up = time.monotonic() + 120
            while len(list(barrier.iterdir())) < 2 and time.monotonic() < give_up:
                time.sleep(0.01)

bottlenecks.FLUSH_EVERY_IMAGES = 8
decode = decoding.load_rgb
def slow_decode(*args):
    if barrier:
        wait_for_partner()
    time.sleep(0.01)
    return decode(*args)
decoding.load_rgb = slow_decode

if mode == "pause_export":
    write = export.atomic_write
    @contextlib.contextmanager
    def paused_write(path, mode="wb"):
        with write(path, mode) as handle:
            yield handle
            handle.flush()
            print("PAUSED", path, flush=True)
            time.sleep(600)
    export.atomic_write = paused_write
cli()
'''


@dataclass
class Reference:
    """One uninterrupted run: what every interrupted or concurrent run must reproduce exactly."""
    root: Path
    hub: Path
    images: Path
    total: int  # image files
    usable: int  # of which decodable
    graph: bytes
    labels: bytes
    sidecar: bytes
    vectors: dict
    seconds: float

    def args(self, run_dir: Path, bottleneck_dir: Path) -> list[str]:
        return ["--image_dir", str(self.images), "--tfhub_module", str(self.hub), "--tfhub_image_size",
                str(HUB_SIZE), "--model_dir", str(self.root / "models"), "--bottleneck_dir", str(bottleneck_dir),
                "--output_graph", str(run_dir / "out" / "g.pb"), "--output_labels",
                str(run_dir / "out" / "labels.txt"), "--summaries_dir", str(run_dir / "logs"),
                "--how_many_training_steps", "100", "--learning_rate", "0.5", "--random_seed", "7"]


def retrain_cli(args, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.retrain", *args], cwd=PROJECT, env=ENV, text=True,
                          capture_output=True, timeout=300, preexec_fn=preexec_fn)


def start_driver(mode: str, args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, mode, *args], cwd=PROJECT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def shards(bottleneck_dir: Path) -> list[Path]:
    return list(bottleneck_dir.glob("*/shard-*.h5"))


def cached_vectors(bottleneck_dir: Path) -> dict:
    """Every vector in the cache by key; fails if any shard is damaged."""
    folders = [p for p in bottleneck_dir.iterdir() if p.is_dir()] if bottleneck_dir.is_dir() else []
    if not folders:
        return {}
    (folder,) = folders
    messages = []
    loaded = BottleneckCache(bottleneck_dir, folder.name, HUB_FEATURES).load(log=messages.append)
    try:
        vectors = loaded.rows(np.arange(len(loaded))).read()
        keys = loaded.keys.copy()
    finally:
        loaded.close()
    assert messages == []
    return dict(zip(keys, vectors))


def assert_same_vectors(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, vector in expected.items():
        np.testing.assert_array_equal(actual[key], vector)


def assert_same_outputs(run_dir: Path, reference: Reference) -> None:
    """Bit-identical graph, labels and sidecar (what --random_seed promises)."""
    assert (run_dir / "out" / "g.pb").read_bytes() == reference.graph
    assert (run_dir / "out" / "labels.txt").read_bytes() == reference.labels
    assert (run_dir / "out" / "g.json").read_bytes() == reference.sidecar


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("faults")
    save_tiny_hub_module(root / "hub")
    images = make_dataset(root / "images", per_class=40)
    for i, name in enumerate(ODD_NAMES):
        make_image(images / "red" / name, (200, 40, 40), seed=5000 + i)
    make_image(images / "red" / os.fsdecode(b"caf\xe9 latin-1.jpg"), (200, 40, 40), seed=6000)  # not UTF-8
    (images / "blue" / os.fsdecode(b"r\xe9sum\xe9.jpg")).write_bytes(b"")  # not UTF-8, and not an image
    total = len(list(images.rglob("*.jpg")))
    run_dir = root / "reference"
    started = time.monotonic()
    result = retrain_cli(Reference(root, root / "hub", images, total, total - 1, b"", b"", b"", {}, 0)
                         .args(run_dir, run_dir / "bn"))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "warning: skipping unreadable image" in result.stdout and "Skipped 1 unreadable image(s)" in result.stdout
    out = run_dir / "out"
    return Reference(root, root / "hub", images, total, total - 1, (out / "g.pb").read_bytes(),
                     (out / "labels.txt").read_bytes(), (out / "g.json").read_bytes(),
                     cached_vectors(run_dir / "bn"), seconds)


def kill_when(process: subprocess.Popen, ready, give_up_after: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` (a guard, not a timing assertion, ends a stuck wait)."""
    end = time.monotonic() + give_up_after
    while process.poll() is None and not ready() and time.monotonic() < end:
        time.sleep(0.005)
    process.kill()
    process.communicate()


def test_sigkill_while_caching_and_exporting_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    rng = np.random.default_rng(2)
    bn, out = tmp_path / "bn", tmp_path / "out"
    args = reference.args(tmp_path, bn)

    # 1. Mid-caching: once 1-3 shards of 8 vectors are on disk.
    flushed = int(rng.integers(1, 4))
    kill_when(start_driver("run", args), lambda: len(shards(bn)) >= flushed)
    after_first = cached_vectors(bn)
    assert 0 < len(after_first) < reference.usable  # the kill landed while caching

    # 2. At a random moment of a whole run (start-up, caching, training or export).
    process = start_driver("run", args)
    time.sleep(rng.uniform(0, reference.seconds))
    process.kill()
    process.communicate()
    after_second = cached_vectors(bn)
    assert set(after_first) <= set(after_second)

    # 3. During export, over the outputs of an earlier run: the new graph is complete but not yet renamed.
    out.mkdir(exist_ok=True)
    (out / "g.pb").write_bytes(b"previous graph")
    (out / "labels.txt").write_bytes(b"previous labels\n")
    process = start_driver("pause_export", args)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("PAUSED"):
            break
    process.kill()
    process.communicate()
    assert lines and lines[-1].startswith("PAUSED"), "".join(lines)
    found = next(re.match(r"Bottlenecks: (\d+) of (\d+) images found", line) for line in lines
                 if line.startswith("Bottlenecks:"))
    assert int(found[1]) == len(after_second)  # every flushed vector was reused: only in-flight work was redone
    assert (out / "g.pb").read_bytes() == b"previous graph"
    assert (out / "labels.txt").read_bytes() == b"previous labels\n"
    assert list(out.glob(".g.pb.*.tmp"))  # the complete new graph, which never reached its final name
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["g.pb", "labels.txt"]

    # 4. Rerun: completes, and everything equals the uninterrupted run's, bit for bit.
    result = retrain_cli(args)
    assert result.returncode == 0, result.stderr
    assert f"{reference.usable} of {reference.total} images found in the cache" in result.stdout
    assert_same_outputs(tmp_path, reference)
    assert_same_vectors(cached_vectors(bn), reference.vectors)


def test_two_concurrent_runs_on_one_folder_and_cache_both_finish_correctly(reference, tmp_path):
    bn, barrier = tmp_path / "shared_bn", tmp_path / "barrier"
    barrier.mkdir()
    processes = [start_driver(f"together:{barrier}", reference.args(tmp_path / name, bn)) for name in ("a", "b")]
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        # Both computed every vector at the same time, writing and merging shards in the one cache folder.
        assert f"0 of {reference.total} images found in the cache" in stdout
    for name in ("a", "b"):
        assert_same_outputs(tmp_path / name, reference)
    assert_same_vectors(cached_vectors(bn), reference.vectors)


def file_size_limit(limit: int):
    """For preexec_fn: writes beyond ``limit`` bytes fail with EFBIG, as on a full disk."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_while_caching_is_one_error_line_and_leaves_no_half_shard(reference, tmp_path):
    bn = tmp_path / "bn"
    result = retrain_cli(reference.args(tmp_path, bn), preexec_fn=file_size_limit(4096))
    assert result.returncode == 2
    assert "File too large" in one_error_line(result.stderr)
    assert not shards(bn) and not (tmp_path / "out" / "g.pb").exists()
    assert not [p for p in bn.rglob("*") if p.is_file() and p.name != ".lock"]


def test_full_disk_during_export_is_one_error_line_and_keeps_the_old_outputs(reference, tmp_path):
    bn = tmp_path / "bn"
    shutil.copytree(reference.root / "reference" / "bn", bn)
    out = tmp_path / "out"
    out.mkdir()
    (out / "g.pb").write_bytes(b"previous graph")
    result = retrain_cli(reference.args(tmp_path, bn), preexec_fn=file_size_limit(len(reference.graph) - 1))
    assert result.returncode == 2
    assert "g.pb: File too large" in one_error_line(result.stderr)
    assert (out / "g.pb").read_bytes() == b"previous graph"
    assert sorted(p.name for p in out.iterdir()) == ["g.pb"]  # no half-written file, not even a temporary one
    assert_same_vectors(cached_vectors(bn), reference.vectors)


def test_atomic_write_keeps_the_old_file_on_a_crash_and_gives_normal_permissions(tmp_path):
    target = tmp_path / "labels.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["labels.txt"]
    with atomic_write(target, "w") as handle:
        handle.write("new\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.read_text() == "new\n" and stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


# --- Damaged cache (in-process, tiny frozen-graph backbone) ---------------------------------------------------

@pytest.fixture
def tiny_cache(image_dir, tiny_model_dir, tmp_path, monkeypatch):
    """Bottlenecks of 36 images in 6 shards; returns (paths, backbone, cache, first result)."""
    monkeypatch.setattr(bottlenecks, "FLUSH_EVERY_IMAGES", 6)
    monkeypatch.setattr(cache_store, "MERGE_WHEN_SHARDS_EXCEED", 100)
    backbone = load_backbone(tiny_spec(), tiny_model_dir)
    cache = BottleneckCache(tmp_path / "bn", backbone.spec.cache_id, backbone.feature_size)
    paths = sorted(image_dir.rglob("*.jpg"))
    first = get_bottlenecks(paths, backbone, backbone.input_size, cache, batch_size=6, log=lambda m: None)
    return paths, backbone, cache, first


def rerun(tiny_cache, cache=None):
    paths, backbone, original, _ = tiny_cache
    messages = []
    result = get_bottlenecks(paths, backbone, backbone.input_size, cache or original, batch_size=6,
                             log=messages.append)
    return result, messages


def shard_key_count(path: Path) -> int:
    import h5py
    with h5py.File(path, "r") as shard:
        return len(shard["keys"])


@pytest.mark.parametrize("damage", ["truncate", "flip a bit", "delete"])
def test_damaged_shard_is_reported_once_and_recomputed(tiny_cache, damage):
    paths, _, cache, first = tiny_cache
    victim = cache.shard_paths()[2]
    lost = shard_key_count(victim)
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[:len(data) * 2 // 3])
    elif damage == "flip a bit":
        victim.write_bytes(data[:-100] + bytes([data[-100] ^ 0x10]) + data[-99:])
    else:
        victim.unlink()
    result, messages = rerun(tiny_cache)
    damaged = [m for m in messages if "is damaged" in m]
    assert len(damaged) == (0 if damage == "delete" else 1)
    assert all(victim.name in m for m in damaged)
    assert (result.computed, result.reused) == (lost, len(paths) - lost)
    np.testing.assert_array_equal(result.features, first.features)
    assert not [m for m in rerun(tiny_cache)[1] if "is damaged" in m]  # repaired for good


def test_every_flipped_bit_is_caught_before_hdf5_parses_the_file(tiny_cache, tmp_path):
    """HDF5 can misread or hang on damaged metadata, so the whole file is checksummed first."""
    cache = tiny_cache[2]
    original = cache.shard_paths()[0]
    data = original.read_bytes()
    probe = BottleneckCache(tmp_path / "probe", cache.cache_id, cache.feature_size)
    probe.directory.mkdir(parents=True)
    header = len(SHARD_MAGIC) + 64  # bytes after the digest up to SHARD_HEADER_BYTES are padding
    rng = np.random.default_rng(0)
    for position in [*range(0, header, 7), *range(SHARD_HEADER_BYTES, len(data), 23)]:
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        (probe.directory / original.name).write_bytes(bytes(flipped))
        messages = []
        loaded = probe.load(log=messages.append)
        loaded.close()
        assert len(loaded) == 0 and len(messages) == 1 and "is damaged" in messages[0], position


def test_shards_of_another_backbone_are_never_mixed_in(tiny_cache, tiny_model_dir):
    paths, _, cache, first = tiny_cache
    for other_spec in (tiny_spec(name="tiny_other", input_mean=0.0, input_std=255.0),  # same feature size
                       tiny_spec(name="tiny_wide", feature_tensor="Relu:0", feature_size=0)):  # a different one
        other = load_backbone(other_spec, tiny_model_dir)
        other_cache = BottleneckCache(cache.directory.parent, other.spec.cache_id, other.feature_size)
        other_cache.directory.mkdir(parents=True, exist_ok=True)
        for shard in cache.shard_paths():
            shutil.copy(shard, other_cache.directory / shard.name)
        messages = []
        result = get_bottlenecks(paths, other, other.input_size, other_cache, batch_size=6,
                                 log=messages.append)
        foreign = [m for m in messages if "made by backbone" in m]
        assert len(foreign) == len(cache.shard_paths())
        assert (result.reused, result.computed) == (0, len(paths))
        expected = other(np.stack([load_rgb(p, other.input_size, other.input_size) for p in paths]))
        np.testing.assert_allclose(result.features, expected, rtol=1e-2, atol=1e-2)
    assert rerun(tiny_cache)[0].reused == len(paths)  # and the first backbone's cache is untouched


# --- Bad input and flags: one error line, exit code 2, no traceback ----------------------------------------------

def class_folders(root: Path, *names: str, broken: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        if broken:
            (folder / "broken.jpg").write_bytes(b"")
        else:
            make_image(folder / "a.jpg", (100, 100, 100), seed=len(name))
    return root


def a_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("I am a file, not a folder\n")
    return path


# name -> (arguments given (reference, tmp_path), expected message); the CLI's other flags are the reference run's.
RETRAIN_CASES = {
    "no image_dir": (lambda r, t: ["--image_dir", ""], "no --image_dir given"),
    "missing image_dir": (lambda r, t: ["--image_dir", str(t / "nowhere")], "is not a folder"),
    "empty image_dir": (lambda r, t: ["--image_dir", str(class_folders(t / "empty"))], "found 0 class folder(s)"),
    "one class": (lambda r, t: ["--image_dir", str(class_folders(t / "one", "cats"))], "at least two"),
    "class without images": (lambda r, t: ["--image_dir", str(_empty_class(t))], "has no images"),
    "class without usable images": (lambda r, t: ["--image_dir", str(_broken_class(t, r))],
                                    "'broken' have no usable training images"),
    "no training share": (lambda r, t: ["--testing_percentage", "60", "--validation_percentage", "40"],
                          "leave no training images"),
    "negative percentage": (lambda r, t: ["--validation_percentage", "-5"], "must be from 0 to under 100"),
    "unknown architecture": (lambda r, t: ["--tfhub_module", "", "--architecture", "alexnet"],
                             "unknown --architecture 'alexnet'"),
    "bad tfhub module": (lambda r, t: ["--tfhub_module", str(t / "nothing")], "neither a URL nor a SavedModel"),
    "output_graph under a file": (lambda r, t: ["--output_graph", str(a_file(t / "f") / "g.pb")],
                                  "--output_graph: cannot write in"),
    "output_graph is a folder": (lambda r, t: ["--output_graph", str(t)], "is a folder"),
    "output_labels under a file": (lambda r, t: ["--output_labels", str(a_file(t / "f") / "l.txt")],
                                   "--output_labels: cannot write in"),
    "bottleneck_dir under a file": (lambda r, t: ["--bottleneck_dir", str(a_file(t / "f") / "bn")],
                                    "--bottleneck_dir: cannot write in"),
    "summaries_dir under a file": (lambda r, t: ["--summaries_dir", str(a_file(t / "f") / "logs")],
                                   "--summaries_dir: cannot write in"),
    "zero steps": (lambda r, t: ["--how_many_training_steps", "0"], "must be at least 1"),
    "not a number": (lambda r, t: ["--how_many_training_steps", "many"], "invalid int value"),
}


def _empty_class(tmp_path: Path) -> Path:
    root = class_folders(tmp_path / "with_empty", "cats", "dogs")
    (root / "birds").mkdir()
    (root / "birds" / "notes.txt").write_text("no images here\n")
    return root


def _broken_class(tmp_path: Path, reference: Reference) -> Path:
    root = tmp_path / "with_broken"
    shutil.copytree(reference.images, root)
    class_folders(root, "broken", broken=True)
    return root


def run_in_process(main, argv, capsys) -> tuple[int, str, str]:
    """The CLI's own wrapper in this process, sparing a TensorFlow start-up per case."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.mark.parametrize("case", RETRAIN_CASES)
def test_bad_retrain_input_is_one_line_and_exit_code_2(case, reference, tmp_path, capsys):
    from retrain.cli.retrain import main
    arguments, message = RETRAIN_CASES[case]
    argv = reference.args(tmp_path, tmp_path / "bn") + arguments(reference, tmp_path)
    code, out, err = run_in_process(main, argv, capsys)
    assert code == 2
    assert message in one_error_line(err)
    assert "Bottlenecks:" not in out or case == "class without usable images"  # fails before the slow part


LABEL_IMAGE_CASES = {
    "graph is not a model": (lambda r, t: ["--graph", str(a_file(t / "g.pb"))], "none of the model formats"),
    "graph missing": (lambda r, t: ["--graph", str(t / "none.pb")], "does not exist"),
    "labels of another length": (lambda r, t: ["--labels", str(_two_labels(t))],
                                 "3 outputs but the labels file has 2 labels"),
    "labels missing": (lambda r, t: ["--labels", str(t / "none.txt")], "cannot read labels file"),
    "image not an image": (lambda r, t: ["--image", str(a_file(t / "x.jpg"))], "cannot read image"),
}


def _two_labels(tmp_path: Path) -> Path:
    path = tmp_path / "two.txt"
    path.write_text("cats\ndogs\n")
    return path


@pytest.mark.parametrize("case", LABEL_IMAGE_CASES)
def test_bad_label_image_input_is_one_line_and_exit_code_2(case, reference, tmp_path, capsys):
    from retrain.cli.label_image import main
    arguments, message = LABEL_IMAGE_CASES[case]
    graph = reference.root / "reference" / "out" / "g.pb"
    argv = ["--graph", str(graph), "--labels", str(graph.with_name("labels.txt")),
            "--image", str(next(reference.images.rglob("*.jpg")))]
    code, _, err = run_in_process(main, argv + arguments(reference, tmp_path), capsys)
    assert code == 2
    assert message in one_error_line(err)


def test_training_and_export_need_no_temporary_files(image_dir, tmp_path, tiny_model_dir):
    """AutoGraph writes generated source with NamedTemporaryFile. On a full disk that fails, AutoGraph runs the
    function unconverted, and any Python control flow over tensors then dies with a traceback mid-training.
    Our tf.functions use tf.cond/tf.while_loop with autograph=False; prove it in a fresh process (nothing
    cached) where NamedTemporaryFile always fails."""
    driver = f"""
import errno, tempfile
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
tempfile.NamedTemporaryFile = full_disk
from retrain.training.head import TrainingConfig
from retrain.pipeline import RetrainOptions, run_retrain
from tests.conftest import tiny_spec
run_retrain(RetrainOptions(image_dir={str(image_dir)!r}, architecture=tiny_spec(), model_dir={str(tiny_model_dir)!r},
                           output_graph={str(tmp_path / 'g.pb')!r}, output_labels={str(tmp_path / 'l.txt')!r},
                           summaries_dir={str(tmp_path / 'logs')!r}, bottleneck_dir={str(tmp_path / 'bn')!r},
                           training=TrainingConfig(steps=30, seed=0)), log=lambda message: None)
"""
    result = subprocess.run([sys.executable, "-c", driver], cwd=PROJECT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "g.pb").stat().st_size > 0
