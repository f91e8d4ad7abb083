"""'None of these' where users see it: the labeler, label_image, relabel, evaluate and the API read unknown_score.

The models here are tiny frozen graphs made by hand: the features are an image's mean colour (normalised), the
softmax is a nearest-colour classifier over red, green and blue, and ``unknown_score`` is the squared distance to
the nearest class colour. Dark images are far from every class: unknown. A red-green blend is near two classes:
not unknown, but low softmax confidence.
"""
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import evaluate as evaluate_script
from retrain.cli import label_image as label_image_script
from retrain.cli import relabel as relabel_script
from retrain.cli.common import run_cli
from retrain.graph_contract import UNKNOWN_SCORE_NAME, Sidecar
from retrain.label.labeler import GraphLabeler
from retrain.label.relabel import REPORT_NAME, UNCERTAIN_FOLDER, UNKNOWN_FOLDER, RelabelOptions, relabel
from tests.conftest import CLASS_COLOURS, TINY_SIZE, make_dataset, make_image
from tests.test_relabel import read_report, tree_bytes

LABELS = sorted(CLASS_COLOURS)
THRESHOLD = 1.5  # squared distance: the red-green blend (~0.75) passes, dark images (> 2.5) do not
# dark: unknown, confident (~0.78); yellow: unknown and below MIN_CONFIDENCE (~0.63); blend: only uncertain (0.5)
DARK, YELLOW, BLEND = (10, 10, 10), (240, 240, 50), (120, 115, 50)
MIN_CONFIDENCE = 0.7


def normalised(colour) -> np.ndarray:
    return (np.array(colour, np.float32) - 127.5) / 127.5


def write_colour_graph(path: Path, with_unknown: bool = True, threshold: float | None = THRESHOLD) -> Path:
    """A frozen nearest-colour classifier, with the ``unknown_score`` output unless not ``with_unknown``, and its
    sidecar (``threshold`` as its unknown_threshold)."""
    import tensorflow as tf
    centres = np.stack([normalised(CLASS_COLOURS[label]) for label in LABELS])
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        features = tf.reduce_mean(images, axis=[1, 2])
        distances = tf.reduce_sum(tf.square(tf.expand_dims(features, 1) - tf.constant(centres)[None]), axis=2)
        tf.nn.softmax(-10.0 * distances, name="final_result")
        if with_unknown:
            tf.reduce_min(distances, axis=1, name=UNKNOWN_SCORE_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    Sidecar(architecture="colours", input_height=TINY_SIZE, input_width=TINY_SIZE, input_mean=127.5, input_std=127.5,
            feature_size=3, labels=LABELS, unknown_threshold=threshold).write(path)
    return path


@pytest.fixture(scope="module")
def colour_graph(tmp_path_factory) -> Path:
    return write_colour_graph(tmp_path_factory.mktemp("colours") / "graph.pb")


@pytest.fixture(scope="module")
def old_graph(tmp_path_factory) -> Path:
    """The same classifier exported before retrain had an unknown score."""
    return write_colour_graph(tmp_path_factory.mktemp("old") / "graph.pb", with_unknown=False, threshold=None)


def mixed_images(root: Path) -> Path:
    """Two images per class, two dark ones and a yellow one (unknown), a red-green blend (uncertain) and a broken
    file."""
    make_dataset(root, per_class=2)
    make_image(root / "dark_1.jpg", DARK, seed=50)
    make_image(root / "red" / "dark_2.png", DARK, seed=51)
    make_image(root / "yellow.jpg", YELLOW, seed=53)
    make_image(root / "blend.jpg", BLEND, seed=52)
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_the_labeler_reads_the_score_and_flags_what_is_over_the_threshold(colour_graph, tmp_path):
    labeler = GraphLabeler(colour_graph)
    assert labeler.unknown_threshold == THRESHOLD and labeler.unknown_note is None
    paths = sorted(p for p in mixed_images(tmp_path / "in").rglob("*") if p.is_file())
    answers = {p.name: a for p, a in zip(paths, labeler.label_files(paths, batch_size=3))}
    assert answers["broken.jpg"].probabilities is None and answers["broken.jpg"].unknown_score is None
    for name in ("dark_1.jpg", "dark_2.png"):
        assert answers[name].unknown_score > THRESHOLD and labeler.is_unknown(answers[name].unknown_score)
    for name in ("red_0.jpg", "green_1.jpg", "blue_0.jpg", "blend.jpg"):
        assert not labeler.is_unknown(answers[name].unknown_score)
    assert answers["red_0.jpg"].unknown_score < 0.05
    # the score is what the graph computes: the squared distance of the mean colour to the nearest class colour
    assert answers["blend.jpg"].unknown_score == pytest.approx(
        min(((normalised(BLEND) - normalised(c)) ** 2).sum() for c in CLASS_COLOURS.values()), abs=0.05)
    # batch size does not change the answers; predict_files still gives (path, probabilities, error)
    one_by_one = list(labeler.label_files(paths, batch_size=1))
    assert [a.unknown_score for a in one_by_one] == pytest.approx([answers[p.name].unknown_score for p in paths])
    assert [len(t) for t in labeler.predict_files(paths[:2])] == [3, 3]


def test_a_model_without_the_output_keeps_working_and_says_why_in_one_line(old_graph, tmp_path):
    labeler = GraphLabeler(old_graph)
    assert labeler.unknown_threshold is None
    assert labeler.unknown_note == (f'{old_graph} has no unknown_score output (exported before retrain had one, or a '
                                    f'Poets graph): no "none of these"')
    path = make_image(tmp_path / "dark.jpg", DARK, seed=1)
    (answer,) = labeler.label_files([path])
    assert answer.unknown_score is None and labeler.is_unknown(answer.unknown_score) is None
    assert answer.probabilities.shape == (3,)


def test_an_output_without_a_threshold_is_no_none_of_these_either(tmp_path):
    graph = write_colour_graph(tmp_path / "graph.pb", threshold=None)
    labeler = GraphLabeler(graph)
    assert labeler.unknown_threshold is None and "gives no unknown_threshold" in labeler.unknown_note
    (answer,) = labeler.label_files([make_image(tmp_path / "dark.jpg", DARK, seed=1)])
    assert answer.unknown_score is None


def test_label_image_says_none_of_the_labels_after_the_top_labels(colour_graph, old_graph, tmp_path, capsys):
    red = make_image(tmp_path / "red.jpg", CLASS_COLOURS["red"], seed=1)
    dark = make_image(tmp_path / "dark.jpg", DARK, seed=2)
    assert label_image_script.main(["--graph", str(colour_graph), "--top_k", "2", "--image", str(red), str(dark)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[:3] == [f"{red}:", lines[1], lines[2]] and lines[1].startswith("red ") and lines[3] == f"{dark}:"
    assert len(lines) == 7 and lines[6].startswith("none of the labels (unknown score ")
    score = float(lines[6].split("unknown score ")[1].split(",")[0])
    assert score > THRESHOLD and lines[6].endswith(f", threshold {THRESHOLD:.4g})")
    assert captured.err == ""

    assert label_image_script.main(["--graph", str(old_graph), "--image", str(dark)]) == 0
    captured = capsys.readouterr()
    assert "none of the labels" not in captured.out and len(captured.out.splitlines()) == 3
    assert captured.err.splitlines() == [f'note: {old_graph} has no unknown_score output (exported before retrain '
                                         f'had one, or a Poets graph): no "none of these"']


def test_relabel_moves_unknowns_to_their_own_folder_reports_why_and_undo_restores_everything(colour_graph, tmp_path,
                                                                                               capsys):
    source, out = mixed_images(tmp_path / "in"), tmp_path / "sorted"
    original = tree_bytes(source)
    assert relabel_script.main(["--graph", str(colour_graph), "--image_dir", str(source), "--output_dir", str(out),
                                "--mode", "move", "--min_confidence", str(MIN_CONFIDENCE)]) == 0
    captured = capsys.readouterr()
    assert "; 3 none of the labels (in _unknown)" in captured.out and "note:" not in captured.err
    folders = {p.name: p.parent.name for p in out.rglob("*") if p.is_file() and p.parent != out}
    assert {name: folders[name] for name in ("dark_1.jpg", "dark_2.png", "yellow.jpg", "blend.jpg")} == {
        "dark_1.jpg": UNKNOWN_FOLDER, "dark_2.png": UNKNOWN_FOLDER, "yellow.jpg": UNKNOWN_FOLDER,
        "blend.jpg": UNCERTAIN_FOLDER}
    assert all(folders[f"{label}_{i}.jpg"] == label for label in LABELS for i in range(2))
    # nothing lost: what went in is what came out plus the unreadable file left in place
    assert [p.name for p in source.rglob("*") if p.is_file()] == ["broken.jpg"]
    moved = sorted(p.read_bytes() for p in out.rglob("*") if p.is_file() and p.parent != out)
    assert moved == sorted(content for name, content in original.items() if name != "broken.jpg")
    rows = {Path(row["source"]).name: row for row in read_report(out / REPORT_NAME)}
    assert len(rows) == len(original)
    for name in ("dark_1.jpg", "dark_2.png", "yellow.jpg"):
        assert float(rows[name]["unknown_score"]) > THRESHOLD
        assert rows[name]["reason"].startswith("none of the labels: unknown score ")
    both = rows["yellow.jpg"]  # unknown and below --min_confidence: _unknown wins, and the reason says both
    assert float(both["confidence"]) < MIN_CONFIDENCE and both["reason"].endswith(f" < min_confidence "
                                                                                   f"{MIN_CONFIDENCE})")
    assert float(rows["dark_1.jpg"]["confidence"]) >= MIN_CONFIDENCE and "also" not in rows["dark_1.jpg"]["reason"]
    assert rows["blend.jpg"]["reason"].startswith("confidence 0.") and float(rows["blend.jpg"]["unknown_score"]) < 1
    assert rows["red_0.jpg"]["reason"] == "top label"
    assert rows["broken.jpg"]["status"] == "unreadable" and rows["broken.jpg"]["unknown_score"] == ""

    assert relabel_script.main(["--undo", str(out / "relabel_journal.jsonl")]) == 0
    assert tree_bytes(source) == original  # byte for byte, every file back at its name
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png")]


def test_a_rerun_reports_the_unknowns_sorted_earlier_from_the_journal(colour_graph, tmp_path):
    source, out = mixed_images(tmp_path / "in"), tmp_path / "sorted"
    labeler = GraphLabeler(colour_graph)
    options = RelabelOptions(str(source), str(out), "copy", MIN_CONFIDENCE)
    first = {v.source.name: v for v in relabel(labeler, options, log=print).verdicts}
    again = {v.source.name: v for v in relabel(labeler, options, log=print).verdicts}
    assert again["dark_1.jpg"].status == "sorted earlier" and again["dark_1.jpg"].unknown
    for name in ("dark_1.jpg", "yellow.jpg", "blend.jpg"):
        assert (again[name].unknown_score, again[name].reason) == (first[name].unknown_score, first[name].reason)
    assert relabel(labeler, RelabelOptions(str(source), mode="report", report_path=str(tmp_path / "r.csv")),
                   log=print).unknown  # report mode flags them too, moving nothing


def test_relabel_with_an_old_model_sorts_as_before_with_one_note(old_graph, tmp_path, capsys):
    source, out = mixed_images(tmp_path / "in"), tmp_path / "sorted"
    assert relabel_script.main(["--graph", str(old_graph), "--image_dir", str(source), "--output_dir",
                                str(out)]) == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("note:")] == [
        f"note: {old_graph.parent / 'graph.pb'} has no unknown_score output (exported before retrain had one, or a "
        f"Poets graph): no \"none of these\""]
    assert "none of the labels" not in captured.out and not (out / UNKNOWN_FOLDER).exists()
    assert all(row["unknown_score"] == "" for row in read_report(out / REPORT_NAME))


def others_folder(root: Path) -> Path:
    """Images of none of the labels, in no particular layout: three far from every class, one near two, one broken."""
    make_image(root / "dark.jpg", DARK, seed=60)
    make_image(root / "nested" / "dark.png", DARK, seed=61)
    make_image(root / "yellow.jpg", YELLOW, seed=62)
    make_image(root / "blend.jpg", BLEND, seed=63)
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def test_evaluate_unknown_dir_prints_the_auroc_and_the_share_of_each_side_flagged(colour_graph, tmp_path, capsys):
    known, others = make_dataset(tmp_path / "known", per_class=3), others_folder(tmp_path / "others")
    assert evaluate_script.main(["--graph", str(colour_graph), "--image_dir", str(known), "--unknown_dir",
                                 str(others)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[-3:] == ["Unknown score AUROC = 1.000 (--image_dir's 9 images vs --unknown_dir's 4)",
                          "Flagged none of the labels: 0.0% of --image_dir's images (0 of 9, unknown score > 1.5)",
                          "Flagged none of the labels: 75.0% of --unknown_dir's images (3 of 4, unknown score > 1.5)"]
    assert "broken.jpg" in captured.err and "note:" not in captured.err


def test_evaluate_unknown_dir_with_an_old_model_is_one_error_line(old_graph, tmp_path, capsys):
    known, others = make_dataset(tmp_path / "known", per_class=1), others_folder(tmp_path / "others")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluate_script.main, ["--graph", str(old_graph), "--image_dir", str(known), "--unknown_dir",
                                       str(others)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err.splitlines() == [f'error: --unknown_dir needs a model with an unknown score, and {old_graph} '
                                         f'has no unknown_score output (exported before retrain had one, or a Poets '
                                         f'graph): no "none of these"']
    assert evaluate_script.main(["--graph", str(old_graph), "--image_dir", str(known)]) == 0  # without: one note
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")] == [
        f'note: {old_graph} has no unknown_score output (exported before retrain had one, or a Poets graph): no '
        f'"none of these"']


def test_the_api_predicts_the_unknown_score_and_flag_for_files_and_arrays(colour_graph, old_graph, tmp_path):
    import retrain
    model = retrain.load(colour_graph)
    assert model.unknown_threshold == THRESHOLD
    dark_file = make_image(tmp_path / "dark.jpg", DARK, seed=3)
    red_pixels = np.full((20, 30, 3), CLASS_COLOURS["red"], np.uint8)
    dark_file_answer, red_array, dark_array, broken = model.predict(
        [dark_file, red_pixels, np.full((25, 25, 3), DARK, np.uint8), _broken(tmp_path)])
    assert dark_file_answer.unknown is True and dark_file_answer.unknown_score > THRESHOLD
    assert dark_array.unknown is True and dark_array.unknown_score > THRESHOLD  # arrays go through the same graph
    assert red_array.unknown is False and red_array.unknown_score < 0.01 and red_array.label == "red"
    assert broken.error and broken.unknown_score is None and broken.unknown is None

    old = retrain.load(old_graph)
    assert old.unknown_threshold is None
    for answer in old.predict([dark_file, red_pixels]):
        assert answer.label and answer.unknown_score is None and answer.unknown is None


def _broken(folder: Path) -> Path:
    path = folder / "broken.jpg"
    path.write_bytes(b"not an image")
    return path
