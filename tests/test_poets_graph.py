"""Graphs made by TensorFlow-for-Poets (batch 1 baked in, no sidecar) work with label_image, relabel and evaluate."""
import numpy as np
import pytest

from retrain.cli import evaluate as evaluate_script
from retrain.cli import label_image as label_image_script
from retrain.cli import relabel as relabel_script
from retrain.data.decode import load_rgb
from retrain.label.evaluation import evaluate_folder
from retrain.label.labeler import GraphLabeler
from retrain.label.relabel import REPORT_NAME
from tests.conftest import TINY_FEATURES, TINY_SIZE, make_dataset, tiny_graph_def
from tests.test_evaluate import independent_scores, mislabelled_dataset
from tests.test_export import poets_style_run
from tests.test_relabel import LABELS, read_report, tiny_backbone_and_head

POETS_FLAGS = ["--input_height", str(TINY_SIZE), "--input_width", str(TINY_SIZE), "--input_mean", "127.5",
               "--input_std", "127.5"]


def write_poets_graph(path, head, reshape_to_batch_1: bool) -> None:
    """A retrained_graph.pb as Poets' retrain.py wrote it.

    The backbone's ``input`` placeholder is fixed at [1, H, W, 3]; the new layer
    reads the bottleneck through ``input/BottleneckInputPlaceholder`` and ends
    in the softmax ``final_result``. With ``reshape_to_batch_1`` the bottleneck
    is reshaped to a constant [1, D], as Poets' Inception v3 graphs do, so even
    a free input cannot take a batch.
    """
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(tiny_graph_def(), name="")
        pooled = graph.get_tensor_by_name("Tiny/AvgPool:0")
        bottleneck = tf.reshape(pooled, [1 if reshape_to_batch_1 else -1, TINY_FEATURES])
        with tf.name_scope("input"):
            bottleneck_input = tf.compat.v1.placeholder_with_default(bottleneck, [None, TINY_FEATURES],
                                                                     name="BottleneckInputPlaceholder")
        with tf.name_scope("final_training_ops"):
            layer = head.layers[0]
            logits = tf.matmul(bottleneck_input, tf.constant(layer.weights)) + tf.constant(layer.biases)
        tf.nn.softmax(logits, name="final_result")
    path.write_bytes(graph.as_graph_def().SerializeToString())


@pytest.fixture(scope="module", params=[False, True], ids=["batch-1-input", "batch-1-reshape"])
def poets_graph(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("poets")
    _, head = tiny_backbone_and_head(root)
    graph = root / "retrained_graph.pb"
    write_poets_graph(graph, head, request.param)
    (root / "retrained_labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return graph, root / "retrained_labels.txt", request.param


def poets_predictions(graph, paths) -> list[int]:
    """What Poets' own label_image.py would answer: one image per session run, on the unmodified graph."""
    normalised = [(load_rgb(p, TINY_SIZE, TINY_SIZE).astype(np.float32) - 127.5) / 127.5 for p in paths]
    return [int(np.argmax(poets_style_run(graph, image[None]))) for image in normalised]


def test_the_graph_really_refuses_batches(poets_graph):
    import tensorflow as tf
    graph, _, _ = poets_graph
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        poets_style_run(graph, np.zeros((2, TINY_SIZE, TINY_SIZE, 3), np.float32))


def test_label_image(poets_graph, tmp_path, capsys):
    graph, labels, _ = poets_graph
    paths = sorted(make_dataset(tmp_path / "images", per_class=2).rglob("*.jpg"))
    code = label_image_script.main(["--graph", str(graph), "--labels", str(labels), *POETS_FLAGS, "--top_k", "1",
                                    "--image", *map(str, paths)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    from_cli = [lines[i + 1].rsplit(" ", 1)[0] for i in range(0, len(lines), 2)]
    assert from_cli == [LABELS[i] for i in poets_predictions(graph, paths)]


def test_relabel_batches_when_it_can_and_agrees_with_poets(poets_graph, tmp_path, capsys):
    graph, labels, reshape_to_batch_1 = poets_graph
    source = mislabelled_dataset(tmp_path / "in")
    out = tmp_path / "out"
    code = relabel_script.main(["--graph", str(graph), "--labels", str(labels), *POETS_FLAGS, "--image_dir",
                                str(source), "--output_dir", str(out), "--min_confidence", "0", "--batch_size", "8"])
    assert code == 0
    rows = {row["source"]: row for row in read_report(out / REPORT_NAME)}
    readable = sorted(p for p in source.rglob("*.*") if p.name != "broken.jpg")
    for path, predicted in zip(readable, poets_predictions(graph, readable)):
        assert rows[str(path)]["predicted_label"] == LABELS[predicted]
        assert (out / LABELS[predicted] / path.name).read_bytes() == path.read_bytes()
    assert rows[str(source / "red" / "broken.jpg")]["status"] == "unreadable"
    assert ("one at a time" in capsys.readouterr().out) == reshape_to_batch_1
    labeler = GraphLabeler(graph, labels, input_height=TINY_SIZE, input_width=TINY_SIZE, input_mean=127.5,
                           input_std=127.5)
    list(labeler.predict_files(readable, batch_size=8))
    assert labeler.batched != reshape_to_batch_1  # a free input is enough: the whole batch in one call


def test_evaluate(poets_graph, tmp_path, capsys):
    graph, labels, _ = poets_graph
    image_dir = mislabelled_dataset(tmp_path / "held_out")
    labeler = GraphLabeler(graph, labels, input_height=TINY_SIZE, input_width=TINY_SIZE, input_mean=127.5,
                           input_std=127.5)
    report = evaluate_folder(labeler, image_dir, batch_size=8).report
    paths = sorted(p for p in image_dir.rglob("*.*") if p.name != "broken.jpg")
    truths = [LABELS.index(p.parent.name) for p in paths]
    expected = independent_scores(truths, poets_predictions(graph, paths), len(LABELS))
    np.testing.assert_allclose(np.stack([report.precision, report.recall, report.f1, report.support], 1), expected)
    assert evaluate_script.main(["--graph", str(graph), "--labels", str(labels), *POETS_FLAGS,
                                 "--image_dir", str(image_dir)]) == 0
    assert f"(N={len(paths)})" in capsys.readouterr().out
