"""evaluate: its numbers match hand-computed and independently computed precision, recall and F1."""
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from retrain.cli import evaluate as evaluate_script
from retrain.data.decode import load_rgb
from retrain.errors import UserError
from retrain.label.evaluation import evaluate_folder, plot_report
from retrain.metrics import classification_report
from tests.conftest import CLASS_COLOURS, TINY_SIZE, make_dataset, make_image
from tests.test_export import poets_style_run
from tests.test_relabel import LABELS, labeler, tiny_graph  # noqa: F401 (module-scoped fixtures)


def independent_scores(truths, predictions, classes):
    """Precision, recall and F1 per class, straight from their definitions, with plain loops."""
    scores = []
    for c in range(classes):
        true_positive = sum(1 for t, p in zip(truths, predictions) if t == c and p == c)
        predicted = sum(1 for p in predictions if p == c)
        actual = sum(1 for t in truths if t == c)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append((precision, recall, f1, actual))
    return np.array(scores)


def test_hand_made_predictions_give_the_hand_computed_scores():
    # class 0: TP 2 of 3 predicted, 4 actual; class 1: 2 of 3, 3 actual; class 2: 3 of 4, 3 actual;
    # class 3: never true, never predicted (scores 0, as scikit-learn's zero_division=0).
    truths = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    predictions = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
    report = classification_report(np.array(truths), np.array(predictions), ["a", "b", "c", "unused"])
    precision = [Fraction(2, 3), Fraction(2, 3), Fraction(3, 4), 0]
    recall = [Fraction(1, 2), Fraction(2, 3), Fraction(1), 0]
    f1 = [Fraction(4, 7), Fraction(2, 3), Fraction(6, 7), 0]
    np.testing.assert_allclose(report.precision, [float(x) for x in precision])
    np.testing.assert_allclose(report.recall, [float(x) for x in recall])
    np.testing.assert_allclose(report.f1, [float(x) for x in f1])
    assert report.support.tolist() == [4, 3, 3, 0]
    assert report.accuracy == pytest.approx(0.7)
    assert report.macro_precision == pytest.approx(float(sum(precision) / 4))
    assert report.macro_recall == pytest.approx(float(sum(recall) / 4))
    assert report.macro_f1 == pytest.approx(float(sum(f1) / 4))
    assert report.confusion.tolist() == [[2, 1, 1, 0], [1, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0]]
    text = report.to_text()
    assert "0.571" in text and "0.857" in text and "macro avg" in text and "Confusion matrix" in text


def test_random_predictions_match_the_definitions():
    rng = np.random.default_rng(3)
    truths, predictions = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    report = classification_report(truths, predictions, list("abcde"))
    expected = independent_scores(truths.tolist(), predictions.tolist(), 5)
    np.testing.assert_allclose(np.stack([report.precision, report.recall, report.f1, report.support], 1), expected)


def mislabelled_dataset(root):
    """Class folders where a few images are in the wrong folder, plus one unreadable file."""
    make_dataset(root, per_class=5)
    make_image(root / "green" / "actually_red.jpg", CLASS_COLOURS["red"], seed=501)
    make_image(root / "blue" / "actually_green.png", CLASS_COLOURS["green"], seed=502)
    (root / "red" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_evaluate_folder_matches_an_independent_computation(tiny_graph, labeler, tmp_path):  # noqa: F811
    image_dir = mislabelled_dataset(tmp_path / "held_out")
    evaluation = evaluate_folder(labeler, image_dir, batch_size=4)
    assert [p.name for p, _ in evaluation.unreadable] == ["broken.jpg"]
    paths = sorted(p for p in image_dir.rglob("*.*") if p.name != "broken.jpg")
    assert sorted(evaluation.paths) == paths
    normalised = np.stack([(load_rgb(p, TINY_SIZE, TINY_SIZE).astype(np.float32) - 127.5) / 127.5 for p in paths])
    predictions = [int(np.argmax(poets_style_run(tiny_graph, normalised[i:i + 1]))) for i in range(len(paths))]
    truths = [LABELS.index(p.parent.name) for p in paths]
    report = evaluation.report
    expected = independent_scores(truths, predictions, len(LABELS))
    np.testing.assert_allclose(np.stack([report.precision, report.recall, report.f1, report.support], 1), expected)
    assert report.accuracy == pytest.approx(np.mean(np.array(truths) == np.array(predictions)))
    assert report.accuracy < 1.0  # the misfiled images count as errors


def test_evaluate_cli_prints_the_report_and_saves_a_plot(tiny_graph, tmp_path, capsys):  # noqa: F811
    image_dir = mislabelled_dataset(tmp_path / "held_out")
    plot = tmp_path / "plots" / "report.png"
    assert evaluate_script.main(["--graph", str(tiny_graph), "--image_dir", str(image_dir), "--plot", str(plot)]) == 0
    output = capsys.readouterr()
    assert "Accuracy = " in output.out and "(N=17)" in output.out and "Confusion matrix" in output.out
    assert any(line.startswith("ECE = 0.") and len(line) == len("ECE = 0.000") for line in output.out.splitlines())
    assert "broken.jpg" in output.err
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200


def test_folders_that_are_not_labels_of_the_graph_are_refused(labeler, tmp_path):  # noqa: F811
    image_dir = make_dataset(tmp_path / "held_out", per_class=1, classes={"red": (200, 0, 0), "purple": (90, 0, 90)})
    with pytest.raises(UserError, match="purple"):
        evaluate_folder(labeler, image_dir)


def test_plot_refuses_unknown_formats(tmp_path):
    report = classification_report(np.array([0, 1]), np.array([0, 1]), ["a", "b"])
    with pytest.raises(UserError, match=".png, .pdf or .svg"):
        plot_report(report, tmp_path / "report.bmp")
