"""relabel sorts images into label folders, reports each image once, and never loses or overwrites a file."""
import csv
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from retrain.data.decode import load_rgb
from retrain.errors import UserError
from retrain.export.frozen_graph import export_frozen_graph, sidecar_for, write_labels
from retrain.label.journal import JOURNAL_NAME, Journal, undo
from retrain.label.labeler import GraphLabeler
from retrain.label.placement import place_file
from retrain.label.relabel import (
    REPORT_NAME,
    UNCERTAIN_FOLDER,
    UNKNOWN_FOLDER,
    RelabelOptions,
    relabel,
    report_probability,
)
from retrain.models.backbones import load_backbone
from retrain.training.head import Head
from tests.conftest import (
    CLASS_COLOURS,
    FLOWERS,
    PROJECT,
    TINY_SIZE,
    make_dataset,
    make_image,
    tiny_spec,
    write_tiny_model_dir,
)
from tests.test_cli import run_script
from tests.test_integration import independent_top1

LABELS = sorted(CLASS_COLOURS)


def centroid_head(features: np.ndarray, truths: np.ndarray, classes: int, scale: float = 0.25) -> Head:
    """Nearest class mean as a linear layer: argmax_c of x.mean_c - |mean_c|^2 / 2 (scaled)."""
    means = np.stack([features[truths == c].mean(axis=0) for c in range(classes)])
    return Head.linear((means.T * scale).astype(np.float32), (-(means ** 2).sum(axis=1) / 2 * scale).astype(np.float32))


def tiny_backbone_and_head(root: Path):
    """The tiny backbone and a head fitted to tiny coloured images: predictions mostly follow the colour."""
    model_dir = write_tiny_model_dir(root)
    backbone = load_backbone(tiny_spec(), model_dir)
    paths = sorted(make_dataset(root / "train", per_class=6).rglob("*.jpg"))
    truths = np.array([LABELS.index(p.parent.name) for p in paths])
    features = backbone(np.stack([load_rgb(p, TINY_SIZE, TINY_SIZE) for p in paths]))
    return backbone, centroid_head(features, truths, len(LABELS))


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory) -> Path:
    """A retrain-style export (graph, labels, sidecar) of the tiny backbone plus a fitted head."""
    root = tmp_path_factory.mktemp("tiny_classifier")
    backbone, head = tiny_backbone_and_head(root)
    graph = root / "out" / "graph.pb"
    export_frozen_graph(backbone, head, graph)
    write_labels(LABELS, graph.with_name("labels.txt"))
    sidecar_for(backbone, LABELS).write(graph)
    return graph


@pytest.fixture(scope="module")
def labeler(tiny_graph) -> GraphLabeler:
    return GraphLabeler(tiny_graph)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative path -> content): what byte-for-byte means."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def image_hashes(*roots: Path) -> Counter:
    """Content hashes of the image files below ``roots``, with multiplicity."""
    return Counter(hashlib.sha1(p.read_bytes()).hexdigest() for root in roots for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in (".jpg", ".png"))


def read_report(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def messy_input(root: Path) -> Path:
    """Class folders with a misfiled image, a nested folder, a PNG, a loose image and a broken file."""
    make_dataset(root, per_class=4)
    make_image(root / "green" / "misfiled_red.jpg", CLASS_COLOURS["red"], seed=77)
    make_image(root / "blue" / "holiday" / "deep.png", CLASS_COLOURS["blue"], seed=78)
    make_image(root / "loose.jpg", CLASS_COLOURS["green"], seed=79)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_copy_sorts_reports_every_image_once_and_a_second_run_is_a_no_op(labeler, tmp_path):
    source = messy_input(tmp_path / "in")
    original = tree_bytes(source)
    predictions = labeler.predict_files(sorted(source.rglob("*.*")), batch_size=1)
    expected = {str(p): labeler.top_labels(probs, 1)[0] for p, probs, _ in predictions if probs is not None}
    confidences = sorted(confidence for _, confidence in expected.values())
    gaps = [(b - a, (a + b) / 2) for a, b in zip(confidences, confidences[1:])][2:-2]
    threshold = max(gaps)[1]  # well between two images' confidences: some sorted, some uncertain
    out = tmp_path / "sorted"
    result = relabel(labeler, RelabelOptions(str(source), str(out), "copy", threshold, batch_size=4), log=print)

    assert tree_bytes(source) == original  # copy leaves the input alone
    rows = read_report(out / REPORT_NAME)
    assert sorted(row["source"] for row in rows) == sorted(str(p) for p in source.rglob("*.*"))  # each image once
    copies = [p for p in out.rglob("*") if p.is_file() and p.parent != out]
    assert len(copies) + sum(row["status"] == "unreadable" for row in rows) == len(original)
    for row in rows:
        if row["status"] == "unreadable":
            assert row["source"].endswith("broken.jpg") and not row["destination"]
            continue
        label, confidence = expected[row["source"]]
        destination = Path(row["destination"])
        assert destination.read_bytes() == Path(row["source"]).read_bytes()
        assert destination.parent.name == (label if confidence >= threshold else UNCERTAIN_FOLDER)
        assert row["predicted_label"] == label and len(row["top3"].split("; ")) == 3
    assert {p.parent.name for p in copies} <= set(LABELS) | {UNCERTAIN_FOLDER}
    assert rows[0]["source"].endswith("misfiled_red.jpg")  # the most confident disagreement comes first
    assert (rows[0]["current_label"], rows[0]["predicted_label"], rows[0]["disagrees"]) == ("green", "red", "yes")
    loose = next(row for row in rows if row["source"].endswith("loose.jpg"))
    assert loose["current_label"] == "" and loose["disagrees"] == ""
    assert result.suspected_mislabels == [v for v in result.verdicts if v.disagrees]

    before = tree_bytes(out)
    again = relabel(labeler, RelabelOptions(str(source), str(out), "copy", threshold), log=print)
    assert {v.status for v in again.verdicts} == {"sorted earlier", "unreadable"}
    after = tree_bytes(out)
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before if k != REPORT_NAME)


def test_name_collisions_get_unique_names_and_nothing_is_overwritten(labeler, tmp_path):
    source = tmp_path / "in"
    for folder in ("a", "b", "c"):
        make_image(source / folder / "same.jpg", CLASS_COLOURS["red"], seed=ord(folder))
    out = tmp_path / "out"
    make_image(out / "red" / "same.jpg", CLASS_COLOURS["red"], seed=1)  # was there before
    existing = (out / "red" / "same.jpg").read_bytes()
    relabel(labeler, RelabelOptions(str(source), str(out), "move", 0.0), log=print)
    names = sorted(p.name for p in (out / "red").iterdir())
    assert names == ["same (1).jpg", "same (2).jpg", "same (3).jpg", "same.jpg"]
    assert (out / "red" / "same.jpg").read_bytes() == existing
    assert not list(source.rglob("*.jpg"))


def test_report_mode_changes_nothing_but_the_report(labeler, tmp_path):
    source = messy_input(tmp_path / "in")
    original = tree_bytes(tmp_path)
    report_path = tmp_path / "report.csv"
    result = relabel(labeler, RelabelOptions(str(source), None, "report", report_path=str(report_path)),
                     log=print)
    assert tree_bytes(tmp_path).keys() - original.keys() == {"report.csv"}
    assert all(tree_bytes(tmp_path)[k] == v for k, v in original.items())
    assert len(read_report(report_path)) == len(result.verdicts) == len(original)
    assert {v.status for v in result.verdicts} == {"predicted", "unreadable"}


def test_move_and_symlink_are_undone(labeler, tmp_path):
    source = messy_input(tmp_path / "in")
    original = tree_bytes(source)
    moved, linked = tmp_path / "moved", tmp_path / "linked"
    relabel(labeler, RelabelOptions(str(source), str(linked), "symlink", 0.0), log=print)
    links = [p for p in linked.rglob("*.*") if p.is_symlink()]
    assert len(links) == len(original) - 1 and all(Path(os.readlink(p)).is_file() for p in links)
    relabel(labeler, RelabelOptions(str(source), str(moved), "move", 0.0), log=print)
    assert [p.name for p in source.rglob("*.*")] == ["broken.jpg"]  # unreadable: left where it was

    assert undo(moved / JOURNAL_NAME, log=print) == 0
    assert tree_bytes(source) == original
    assert undo(linked / JOURNAL_NAME, log=print) == 0
    assert not [p for p in linked.rglob("*.*") if p.is_symlink()]
    assert sorted(p.name for p in moved.iterdir()) == [JOURNAL_NAME, REPORT_NAME]  # label folders removed
    assert undo(moved / JOURNAL_NAME, log=print) == 0 and tree_bytes(source) == original  # rerun: no-op


def test_undo_goes_newest_first(labeler, tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    make_image(source / "photo.jpg", CLASS_COLOURS["red"], seed=1)
    first = (source / "photo.jpg").read_bytes()
    relabel(labeler, RelabelOptions(str(source), str(out), "move", 0.0), log=print)
    second = make_image(source / "photo.jpg", CLASS_COLOURS["red"], seed=2).read_bytes()  # a new photo, same name
    relabel(labeler, RelabelOptions(str(source), str(out), "move", 0.0), log=print)
    # Newest first: the latest photo gets its name back; the older one cannot and stays sorted.
    assert undo(out / JOURNAL_NAME, log=print) == 1
    assert (source / "photo.jpg").read_bytes() == second and (out / "red" / "photo.jpg").read_bytes() == first


def test_bad_options_are_user_errors(labeler, tmp_path):
    source = make_dataset(tmp_path / "in", per_class=1)
    for options, message in [(RelabelOptions(str(source), None, "copy"), "needs output_dir:"),
                             (RelabelOptions(str(source), None, "report"), "needs report=FILE.csv"),
                             (RelabelOptions(str(source), str(tmp_path), "move"), "is inside output_dir="),
                             (RelabelOptions(str(tmp_path / "nope"), str(tmp_path / "o")), "is not a folder"),
                             (RelabelOptions(str(source), str(tmp_path / "o"), min_confidence=2), "from 0 to 1")]:
        with pytest.raises(UserError, match=message):
            relabel(labeler, options, log=print)


# --- crash safety, one state at a time (no TensorFlow needed) ---

def planned_move(tmp_path: Path, mode="move") -> tuple[Path, Path, Path, bytes]:
    """A journal holding one planned (not done) operation; returns (journal, source, destination, content)."""
    source = make_image(tmp_path / "in" / "photo.jpg", CLASS_COLOURS["red"], seed=5)
    destination = tmp_path / "out" / "red" / "photo.jpg"
    journal_path = tmp_path / "out" / JOURNAL_NAME
    with Journal(journal_path) as journal:
        journal.plan(mode, source, destination, hashlib.sha1(source.read_bytes()).hexdigest(), [("red", 0.9)], None)
    return journal_path, source, destination, source.read_bytes()


@pytest.mark.parametrize("killed_after", ["plan", "link", "copy to temporary", "torn done line"])
def test_resume_and_undo_after_a_kill_at_every_step_of_a_move(tmp_path, killed_after):
    journal_path, source, destination, content = planned_move(tmp_path)
    destination.parent.mkdir(parents=True)
    if killed_after == "link":
        os.link(source, destination)
    elif killed_after == "copy to temporary":
        (destination.parent / f".{destination.name}.relabel-tmp").write_bytes(content[:100])
    elif killed_after == "torn done line":
        place_file(source, destination, "move")
        with open(journal_path, "ab") as handle:
            handle.write(b'{"op": "do')
    with Journal(journal_path) as journal:
        in_effect = journal.resume(log=print)
    assert [Path(e["source"]) for e in in_effect] == [source]
    assert Journal(journal_path).operations() == (in_effect, [])  # recorded as done, even after a torn line
    assert not source.exists() and destination.read_bytes() == content
    assert sorted(p.name for p in destination.parent.iterdir()) == [destination.name]  # no temporary left
    assert undo(journal_path, log=print) == 0
    assert source.read_bytes() == content and not destination.exists()


def test_undo_after_a_kill_mid_move_puts_the_file_back_once(tmp_path):
    journal_path, source, destination, content = planned_move(tmp_path)
    destination.parent.mkdir(parents=True)
    os.link(source, destination)  # killed between the new name and removing the old one
    assert undo(journal_path, log=print) == 0
    assert source.read_bytes() == content and not destination.exists()


def test_undo_never_replaces_a_file_that_took_the_original_name(tmp_path):
    journal_path, source, destination, content = planned_move(tmp_path)
    with Journal(journal_path) as journal:
        journal.resume(log=print)
    newcomer = make_image(source, CLASS_COLOURS["blue"], seed=9).read_bytes()
    assert undo(journal_path, log=print) == 1
    assert source.read_bytes() == newcomer and destination.read_bytes() == content


def test_undo_keeps_a_copy_whose_original_is_gone(tmp_path):
    journal_path, source, destination, content = planned_move(tmp_path, mode="copy")
    with Journal(journal_path) as journal:
        journal.resume(log=print)  # carries out the planned copy
    source.unlink()
    assert undo(journal_path, log=print) == 1
    assert destination.read_bytes() == content


def test_move_across_filesystems_copies_then_removes_and_never_overwrites(tmp_path, monkeypatch):
    real_link = os.link

    def no_cross_device_link(src, dst, *args, **kwargs):
        if Path(src).parent.parent.name == "in":  # the source "lives on another filesystem"
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", no_cross_device_link)
    first = make_image(tmp_path / "in" / "a" / "photo.jpg", CLASS_COLOURS["red"], seed=1)
    second = make_image(tmp_path / "in" / "b" / "photo.jpg", CLASS_COLOURS["red"], seed=2)
    contents = first.read_bytes(), second.read_bytes()
    os.utime(first, (1_000_000_000, 1_000_000_000))
    destination = tmp_path / "out" / "photo.jpg"
    place_file(first, destination, "move")
    assert not first.exists() and destination.read_bytes() == contents[0]
    assert destination.stat().st_mtime == 1_000_000_000  # dates survive the copy
    with pytest.raises(FileExistsError):
        place_file(second, destination, "move")
    assert second.read_bytes() == contents[1] and destination.read_bytes() == contents[0]
    assert sorted(p.name for p in destination.parent.iterdir()) == ["photo.jpg"]


# --- a real process, really killed ---

def relabel_command(*args) -> list[str]:
    return [sys.executable, "-m", "scripts.relabel", *map(str, args)]


def done_lines(journal: Path) -> int:
    return journal.read_text().count('"op": "done"') if journal.exists() else 0


def test_sigkill_mid_move_then_resume_then_undo(tiny_graph, tmp_path):
    source = make_dataset(tmp_path / "in", per_class=20)
    original = tree_bytes(source)
    # A FIFO sorts between the green and red images; reading it blocks, so the run is
    # deterministically mid-way (blue and green moved, red not) when we kill it.
    fifo = source / "green" / "green_fifo.jpg"
    os.mkfifo(fifo)
    out = tmp_path / "sorted"
    journal = out / JOURNAL_NAME
    command = relabel_command("--graph", tiny_graph, "--image_dir", source, "--output_dir", out, "--mode", "move",
                              "--min_confidence", "0", "--batch_size", "4")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 120
        while done_lines(journal) < 40 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
    fifo.unlink()
    assert done_lines(journal) == 40
    originals = Counter(hashlib.sha1(content).hexdigest() for content in original.values())
    assert image_hashes(source, out) == originals  # each image in the input or the output, exactly once

    resumed = subprocess.run(command + ["--audit"], cwd=PROJECT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "40 sorted earlier" in resumed.stdout and "20 moved" in resumed.stdout
    assert not list(source.rglob("*.jpg"))
    assert image_hashes(out) == originals
    assert len(read_report(out / REPORT_NAME)) == len(original)

    undone = subprocess.run(relabel_command("--undo", journal), cwd=PROJECT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert undone.returncode == 0, undone.stderr[-2000:]
    assert tree_bytes(source) == original
    assert not image_hashes(out)


def test_a_confidence_just_under_the_threshold_never_reads_as_reaching_it():
    """Found by the flowers test: 0.49996 was printed 0.5000 beside a photo put in _uncertain for being under 0.5."""
    for probability in np.float32([0.49996, 0.49999997, 0.5, 0.29, 0.75, 1.0]):
        shown = float(report_probability(probability))
        assert shown <= probability < shown + 1e-4
        assert (shown >= 0.5) == (probability >= 0.5)
    assert report_probability(np.float32(0.29)) == "0.2900"  # its binary value is 0.28999999...


# --- the acceptance on the real flowers ---

@pytest.fixture(scope="module")
def flowers_graph(flowers_retrained) -> Path:
    """The session's one retrain of the real MobileNet on all the flowers (see conftest)."""
    return flowers_retrained.out / "graph.pb"


@pytest.fixture(scope="module")
def flowers_copy(flowers_graph, tmp_path_factory) -> tuple[Path, Path]:
    """All the flowers plus one broken file, relabelled with --mode copy: (input, output)."""
    root = tmp_path_factory.mktemp("flowers_copy")
    source = Path(shutil.copytree(FLOWERS, root / "in"))
    (source / "roses" / "broken.jpg").write_bytes(b"this is not a photo")
    out = root / "sorted"
    result = run_script("scripts.relabel", "--graph", str(flowers_graph), "--image_dir", str(source),
                        "--output_dir", str(out), "--mode", "copy", "--audit", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    print(result.stdout[-3000:], result.stderr[-300:])  # the audit and the speed, for `pytest -s`
    return source, out


@pytest.mark.integration
def test_flowers_relabel_copy_agrees_with_the_graph(flowers_graph, flowers_copy):
    import json
    source, out = flowers_copy
    sources = [p for p in source.rglob("*") if p.is_file()]
    rows = read_report(out / REPORT_NAME)
    assert sorted(row["source"] for row in rows) == sorted(map(str, sources))  # every image exactly once
    unreadable = [row for row in rows if row["status"] == "unreadable"]
    copies = [p for p in out.rglob("*") if p.is_file() and p.parent != out]
    assert len(sources) == len(copies) + len(unreadable) and len(unreadable) == 1
    by_destination = {row["destination"]: row for row in rows if row["destination"]}
    assert sorted(by_destination) == sorted(map(str, copies))
    for copy in copies:
        row = by_destination[str(copy)]
        # the report's rounded unknown score could sit on the threshold: its reason says which side the model saw
        folder = (UNKNOWN_FOLDER if row["reason"].startswith("none of the labels") else
                  row["predicted_label"] if float(row["confidence"]) >= 0.5 else UNCERTAIN_FOLDER)
        assert copy.parent.name == folder and copy.read_bytes() == Path(row["source"]).read_bytes()
    # An independent TF1 loader agrees with the report on a sample of the images.
    labels = flowers_graph.with_name("labels.txt").read_text().split("\n")[:-1]
    info = json.loads(flowers_graph.with_suffix(".json").read_text())
    sample = [row for row in rows if row["status"] == "copied"][::20]
    independent = independent_top1(flowers_graph, info, [Path(row["source"]) for row in sample])
    assert [labels[i] for i in independent] == [row["predicted_label"] for row in sample]


@pytest.mark.integration
def test_flowers_evaluate_agrees_with_the_relabel_report(flowers_graph, flowers_copy, tmp_path):
    source, out = flowers_copy
    subset = tmp_path / "subset"  # a slice of the flowers keeps this quick; relabel already saw them all
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        for photo in sorted(folder.glob("*.jpg"))[:8]:
            (subset / folder.name).mkdir(parents=True, exist_ok=True)
            os.link(photo, subset / folder.name / photo.name)
    plot = tmp_path / "report.png"
    result = run_script("scripts.evaluate", "--graph", str(flowers_graph), "--image_dir", str(subset),
                        "--plot", str(plot), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    chosen = {(p.parent.name, p.name) for p in subset.rglob("*.jpg")}
    rows = [row for row in read_report(out / REPORT_NAME)
            if (Path(row["source"]).parent.name, Path(row["source"]).name) in chosen and row["status"] == "copied"]
    correct = sum(row["current_label"] == row["predicted_label"] for row in rows)
    assert f"Accuracy = {correct / len(rows) * 100:.1f}% (N={len(rows)})" in result.stdout
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["scripts.relabel", "--graph", "g.pb", "--image_dir", "/nonexistent/photos", "--output_dir", "o"],
     "is not a folder"),
    (["scripts.relabel", "--graph", "g.pb", "--image_dir", ".", "--mode", "move"], "needs --output_dir"),
    (["scripts.relabel", "--undo", "/nonexistent/journal.jsonl"], "does not exist"),
    (["scripts.evaluate", "--graph", "/nonexistent.pb", "--image_dir", "."], "does not exist"),
])
def test_cli_mistakes_are_one_line_and_exit_code_2(args, message):
    result = run_script(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
