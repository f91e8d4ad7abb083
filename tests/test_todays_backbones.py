"""Issue 23's Keras rows (EfficientNetV2, EfficientNet-B0, ConvNeXt, MobileNetV3), built with random weights.

The weights cannot be downloaded here; everything checked (layer names, feature sizes, preprocessing, ops) is
the same with random weights, and the downloads are tested on 127.0.0.1 with a real hash check.
"""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.models.architectures import ARCHITECTURES, get_architecture
from retrain.models.backbones import load_backbone
from retrain.models.cut import keras_block_output
from tests.conftest import make_dataset, tiny_retrain_options

TODAYS_ROWS = ["efficientnetv2_b0", "efficientnetv2_b1", "efficientnetv2_b2", "efficientnetv2_b3", "efficientnetv2_s",
               "efficientnet_b0", "convnext_tiny", "convnext_small", "mobilenetv3_small", "mobilenetv3_large"]
# One row per family for what costs a whole retrain or a weights file: the layers that matter (preprocessing,
# block naming) are the family's, the variants differ only in widths and repeats.
ONE_PER_FAMILY = ["efficientnetv2_b0", "efficientnet_b0", "convnext_tiny", "mobilenetv3_small"]
# A retrain with fine-tuning and Grad-CAM costs 20 to 56 s a family here: one, the cheapest, keeps make test within
# its ten minutes; every other row retrains its head end to end at the smallest input.
FINE_TUNED_END_TO_END = ["mobilenetv3_small"]
SMALL_INPUT = 32  # every family's smallest input; the layers and ops do not depend on the size
GRADCAM_INPUT = 64


def small(name: str, **changes) -> object:
    return dataclasses.replace(get_architecture(name), **{"input_size": SMALL_INPUT, **changes})


class RandomRows:
    """Each row built once per session at the smallest input with random weights, and its weights file.

    Building a row costs seconds (tens of thousands of Keras ops); the tests below share one build each.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._built: dict[str, tuple[object, Path]] = {}

    def model(self, name: str):
        """The row's Keras model as ``keras_features`` builds it (random weights)."""
        return self._build(name)[0]

    def weights_file(self, name: str) -> Path:
        """The model's weights, at the path under ``folder`` that the row's ``model_file`` names (Keras 3 suffix)."""
        return self._build(name)[1]

    def _build(self, name: str) -> tuple[object, Path]:
        if name not in self._built:
            from retrain.models.backbones import keras_features
            spec = get_architecture(name)
            model = keras_features(small(name), None).keras_model
            path = self.folder / spec.model_file.replace("_notop.h5", ".weights.h5").replace("_no_top_v2.h5",
                                                                                              ".weights.h5")
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save_weights(path)  # Keras 3 wants the .weights.h5 suffix
            self._built[name] = model, path
        return self._built[name]


@pytest.fixture(scope="module")
def random_rows(tmp_path_factory) -> RandomRows:
    return RandomRows(tmp_path_factory.mktemp("random_rows"))


@pytest.mark.parametrize("name", TODAYS_ROWS)
def test_each_row_builds_with_its_feature_size_and_its_cuts_split_the_model(name, random_rows):
    import keras
    spec = small(name)
    model = random_rows.model(name)
    assert model.output_shape == (None, spec.feature_size)
    names = [layer.name for layer in model.layers]
    positions = [names.index(keras_block_output(model, cut).name) for cut in spec.fine_tune_cuts]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)  # from the top
    for cut in (spec.fine_tune_cuts[0], spec.fine_tune_cuts[-1]):
        keras.Model(keras_block_output(model, cut).output, model.output)  # nothing above bypasses the cut


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_the_graph_normalises_pixels_as_keras_own_imagenet_model_does(name, random_rows, monkeypatch):
    """Keras' weights="imagenet" constructor, handed our weights file instead of downloading, is the reference:
    same features on raw [0, 255] pixels (EfficientNet v1's extra per-channel scale included)."""
    import keras
    from keras.src.utils import file_utils
    weights = random_rows.weights_file(name)
    spec = small(name, model_file=str(weights.relative_to(random_rows.folder)), file_hash="")
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(weights))
    reference = getattr(keras.applications, spec.keras_model)(include_top=False, weights="imagenet", pooling="avg",
                                                              input_shape=(SMALL_INPUT, SMALL_INPUT, 3))
    images = np.random.default_rng(0).integers(0, 256, (2, SMALL_INPUT, SMALL_INPUT, 3), dtype=np.uint8)
    expected = np.asarray(reference(images.astype(np.float32), training=False))
    np.testing.assert_allclose(load_backbone(spec, random_rows.folder)(images), expected, rtol=1e-4, atol=1e-4)


def row_with_random_weights(name: str, random_rows: RandomRows, **changes) -> object:
    """The row at the smallest input, its model file the random-weights file with its md5."""
    weights = random_rows.weights_file(name)
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    return small(name, model_file=str(weights.relative_to(random_rows.folder)), file_hash=f"md5:{md5}", **changes)


@pytest.mark.parametrize("name", [row for row in TODAYS_ROWS if row not in FINE_TUNED_END_TO_END])
def test_every_todays_row_retrains_end_to_end_into_a_graph_and_saved_model_that_pass_the_check(name, random_rows,
                                                                                                 tmp_path):
    """Random weights, 2 steps: the run's own export check compares the graph with the trained model; the graph
    check then reads it (the ops of a family do not depend on its input size). The SavedModel is made from the
    frozen graph, so one row per family writes and checks one: the variants add only widths and repeats."""
    from retrain.graph_contract import Sidecar
    from retrain.models.backbones import load_graph_def
    from retrain.models.graph_check import check_saved_model
    from retrain.pipeline import run_retrain
    spec = row_with_random_weights(name, random_rows)
    options = tiny_retrain_options(make_dataset(tmp_path / "images", per_class=3), random_rows.folder, tmp_path,
                                   steps=2)
    saved_model = str(tmp_path / "saved_model") if name in ONE_PER_FAMILY else ""
    run_retrain(dataclasses.replace(options, architecture=spec, saved_model_dir=saved_model), log=lambda message: None)
    graph = tmp_path / "out" / "g.pb"
    assert {"input", "final_result"} <= {node.name for node in load_graph_def(graph).node}  # refuses impure ops
    assert (Sidecar.read(graph).architecture, Sidecar.read(graph).feature_size) == (name, spec.feature_size)
    if saved_model:
        check_saved_model(saved_model)


@pytest.mark.parametrize("name", FINE_TUNED_END_TO_END)
def test_a_todays_row_retrains_and_fine_tunes_end_to_end_into_a_graph_that_passes_the_check(name, random_rows,
                                                                                             tmp_path):
    """Random weights, 2 steps, 1 fine-tuned block; 64x64 images so the last feature map (1/32) is 2x2 for
    Grad-CAM, which finds it by itself in the retrained graph."""
    from retrain.explain.gradcam import GradCam
    from retrain.graph_contract import Sidecar
    from retrain.models.backbones import load_graph_def
    from retrain.models.graph_check import check_saved_model
    from retrain.pipeline import run_retrain
    from retrain.training.finetune import FineTuneConfig
    spec = row_with_random_weights(name, random_rows, input_size=GRADCAM_INPUT)
    options = tiny_retrain_options(make_dataset(tmp_path / "images", per_class=3), random_rows.folder, tmp_path,
                                   steps=2)
    run_retrain(dataclasses.replace(options, architecture=spec, fine_tune=FineTuneConfig(1, 1e-3, 2, 4),
                                    saved_model_dir=str(tmp_path / "saved_model")))
    graph = tmp_path / "out" / "g.pb"
    nodes = {node.name for node in load_graph_def(graph).node}  # load_graph_def refuses any op that is not pure
    assert {"input", "final_result"} <= nodes
    check_saved_model(tmp_path / "saved_model")
    sidecar = Sidecar.read(graph)
    assert sidecar.architecture == spec.name
    images = np.random.default_rng(0).integers(0, 256, (1, GRADCAM_INPUT, GRADCAM_INPUT, 3), dtype=np.uint8)
    assert GradCam(graph, sidecar).maps(images, [0]).shape == (1, 2, 2)


def test_a_row_downloads_its_weights_and_checks_them_against_the_hash(http_server, random_rows, tmp_path):
    folder, base_url, requests = http_server
    row = get_architecture("mobilenetv3_small")
    weights = folder / random_rows.weights_file(row.name).relative_to(random_rows.folder)
    weights.parent.mkdir(parents=True)
    shutil.copy(random_rows.weights_file(row.name), weights)
    url = f"{base_url}/{weights.relative_to(folder)}"
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    spec = small(row.name, url=url, model_file="keras/mobilenetv3_small.weights.h5", file_hash=f"md5:{md5}")
    assert load_backbone(spec, tmp_path / "models").feature_size == 576 and len(requests) == 1
    published = small(row.name, url=url, model_file="keras/other.weights.h5")  # Keras' own hash: not this file
    with pytest.raises(UserError) as refused:
        load_backbone(published, tmp_path / "models")
    assert "damaged or not the expected file" in str(refused.value) and "\n" not in str(refused.value)


def test_rows_carry_keras_published_hashes_and_facts():
    for name in TODAYS_ROWS:
        spec = ARCHITECTURES[name]
        algorithm, digest = spec.file_hash.split(":")
        assert len(digest) == {"md5": 32, "sha256": 64}[algorithm] and spec.url.startswith("https://")
        assert spec.input_mean == 0.0 and spec.input_std == 1.0  # the model normalises raw pixels itself
        assert 60 < spec.imagenet_top1 < 90 and spec.parameters_m > 0 and spec.multiply_adds_g > 0 and spec.cpu_ms > 0


def test_list_architectures_prints_every_row_with_its_facts():
    from tests.test_cli import run_script
    result = run_script("scripts.retrain", "--list_architectures")
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(ARCHITECTURES) <= set(lines)
    row = lines["efficientnetv2_s"]
    assert "83.9%" in row and "8.36G" in row and " ms" in row
    assert "keras.io/api/applications" in result.stdout
