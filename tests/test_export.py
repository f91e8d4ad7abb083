"""The exported graph keeps Poets' contract and agrees with the head it came from."""
import json

import numpy as np
import pytest

from retrain.data.decode import load_rgb
from retrain.errors import UserError
from retrain.export.frozen_graph import export_frozen_graph, saved_model_from_graph, sidecar_for, write_labels
from retrain.label.labeler import GraphLabeler
from retrain.models.backbones import load_backbone, normalize_pixels
from retrain.training.head import Head
from tests.conftest import TINY_FEATURES, TINY_SIZE, tiny_spec

LABELS = ["blue", "green", "red"]


@pytest.fixture
def exported(tiny_model_dir, tmp_path):
    backbone = load_backbone(tiny_spec(), tiny_model_dir)
    rng = np.random.default_rng(0)
    head = Head.linear(rng.normal(0, 1, (TINY_FEATURES, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32))
    graph = tmp_path / "out" / "retrained_graph.pb"
    export_frozen_graph(backbone, head, graph)
    write_labels(LABELS, tmp_path / "out" / "retrained_labels.txt")
    sidecar_for(backbone, LABELS).write(graph)
    return backbone, head, graph


def poets_style_run(graph_path, images):
    """What TensorFlow-for-Poets' label_image.py does: import, feed input:0, read final_result:0."""
    import tensorflow as tf
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="import")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run("import/final_result:0", {"import/input:0": images})


def test_graph_has_poets_tensor_names_and_matches_the_head(exported, image_dir):
    backbone, head, graph = exported
    paths = sorted(image_dir.rglob("*.jpg"))[:6]
    images = np.stack([load_rgb(p, TINY_SIZE, TINY_SIZE) for p in paths])
    normalised = (images.astype(np.float32) - 127.5) / 127.5
    from_graph = np.concatenate([poets_style_run(graph, normalised[i:i + 1]) for i in range(len(paths))])
    expected = head.predict_proba(backbone(images))
    np.testing.assert_allclose(from_graph, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(from_graph.sum(axis=1), 1.0, rtol=1e-5)
    labeler = GraphLabeler(graph)
    from_labeler = np.stack([probs for _, probs, _ in labeler.predict_files(paths, batch_size=4)])
    np.testing.assert_allclose(from_labeler, expected, rtol=1e-4, atol=1e-5)


def test_sidecar_and_labels_file(exported, tmp_path):
    _, _, graph = exported
    info = json.loads(graph.with_suffix(".json").read_text())
    assert info["labels"] == LABELS and info["input_height"] == TINY_SIZE
    assert (info["input_mean"], info["input_std"], info["input_layer"]) == (127.5, 127.5, "input")
    assert (tmp_path / "out" / "retrained_labels.txt").read_text() == "blue\ngreen\nred\n"


def test_labels_file_of_the_wrong_length_is_refused(exported, tmp_path):
    _, _, graph = exported
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(UserError, match="3 outputs but the labels file has 2"):
        GraphLabeler(graph, labels)


def test_input_size_the_graph_does_not_take_is_refused(exported):
    _, _, graph = exported
    with pytest.raises(UserError, match=f"does not take {TINY_SIZE + 8}x{TINY_SIZE} images"):
        GraphLabeler(graph, input_height=TINY_SIZE + 8)


def test_not_a_graph_is_refused(tmp_path):
    bogus = tmp_path / "bogus.pb"
    bogus.write_text("hello, I am not a graph")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(UserError, match="none of the model formats"):
        GraphLabeler(bogus, labels)


def normalized(backbone, images: np.ndarray) -> np.ndarray:
    """What a Poets-style caller feeds the graph's ``input``: ``(pixel - mean) / std`` in float32."""
    return normalize_pixels(images.astype(np.float32), backbone.spec.input_mean, backbone.spec.input_std)


def test_saved_model_gives_the_same_answers(exported, tmp_path):
    import tensorflow as tf
    backbone, head, graph = exported
    saved_model_from_graph(graph, sidecar_for(backbone, LABELS), tmp_path / "saved")
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    images = np.random.default_rng(1).integers(0, 256, (3, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    outputs = loaded.signatures["serving_default"](input=tf.constant(normalized(backbone, images)))
    np.testing.assert_allclose(outputs["final_result"].numpy(), head.predict_proba(backbone(images)),
                               rtol=1e-4, atol=1e-5)


def keras_backbone(tmp_path):
    import keras

    from retrain.models.architectures import ArchitectureSpec
    model_dir = tmp_path / "models"
    weights = model_dir / "keras" / "tiny.weights.h5"
    weights.parent.mkdir(parents=True)
    keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg", input_shape=(32, 32, 3),
                                   alpha=0.35).save_weights(str(weights))
    spec = ArchitectureSpec(name="tiny_keras", source="keras", keras_model="MobileNetV2", keras_kwargs={"alpha": 0.35},
                            url="http://127.0.0.1:9/x.h5", model_file="keras/tiny.weights.h5", input_size=32,
                            input_mean=0.0, input_std=1.0, feature_size=1280)
    return load_backbone(spec, model_dir)


def hub_backbone(tmp_path):
    from retrain.models.architectures import tfhub_spec
    from tests.test_backbones import save_tiny_hub_module
    save_tiny_hub_module(tmp_path / "hub")
    return load_backbone(tfhub_spec(str(tmp_path / "hub"), input_size=16), tmp_path / "models")


@pytest.mark.parametrize("make_backbone", [keras_backbone, hub_backbone], ids=["keras", "tfhub"])
def test_every_source_freezes_into_a_poets_graph(make_backbone, tmp_path):
    backbone = make_backbone(tmp_path)
    rng = np.random.default_rng(0)
    head = Head.linear(rng.normal(0, 0.1, (backbone.feature_size, 3)).astype(np.float32), np.zeros(3, np.float32))
    graph = tmp_path / "graph.pb"
    export_frozen_graph(backbone, head, graph)
    size = backbone.input_size
    images = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    from_graph = poets_style_run(graph, normalized(backbone, images))
    np.testing.assert_allclose(from_graph, head.predict_proba(backbone(images)), rtol=1e-4, atol=1e-5)
