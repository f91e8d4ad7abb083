"""int8 TFLite keeps the head and the unknown score in float behind an int8 backbone (issue 23 point 4)."""
import dataclasses

import numpy as np
import pytest

from retrain.data.decode import decode_sample
from retrain.errors import ExportMismatch, UserError
from retrain.export import int8_tail
from retrain.export.check import INT8_UNKNOWN_TOLERANCE, check_export
from retrain.export.deploy import check_images, write_tflite_model
from retrain.export.tflite import convert_graph
from retrain.graph_contract import UNKNOWN_SCORE_NAME, Sidecar
from retrain.models.model_file import load_model, tflite_interpreter
from retrain.pipeline import run_retrain
from tests.conftest import CLASS_COLOURS, make_image, tiny_graph_def, tiny_spec, write_tiny_model_dir
from tests.test_pipeline import options

INT8 = "TFLite int8"


def spread_dataset(root, per_class=12):
    """Noisy images whose colour also varies from image to image, as photos of one class do.

    The shared test images vary only by pixel noise, which the tiny backbone's pooling averages away: their
    features barely move within a class, so the Mahalanobis score magnifies int8 rounding far beyond what real
    photos see (measured in benchmarks/README.md, Exports).
    """
    rng = np.random.default_rng(0)
    for c, (label, colour) in enumerate(CLASS_COLOURS.items()):
        for i in range(per_class):
            make_image(root / label / f"{label}_{i}.jpg", np.array(colour) + rng.normal(0, 30, 3), seed=c * 1000 + i)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A seeded tiny retrain with the unknown score and an int8 TFLite file (float I/O), checked by the run."""
    work = tmp_path_factory.mktemp("int8_tail")
    model_dir = write_tiny_model_dir(work)
    images = spread_dataset(work / "images")
    out = work / "out"
    messages = []
    result = run_retrain(options(images, out, model_dir, output_tflite=str(out / "g.tflite"), quantize="int8",
                                 quantize_samples=50), log=messages.append)
    return result, out, images, messages


def _check_images(result, out):
    split = result.data["validation"]
    graph = load_model(out / "g.pb")
    contract = Sidecar.read(out / "g.pb")
    return check_images(split.paths, split.labels, 20, contract,
                        lambda _, pixels: graph.predict_with_unknown(pixels, (contract.input_mean,
                                                                              contract.input_std)),
                        "the source graph")


def test_int8_file_carries_the_score_within_tolerance_and_the_same_top1(trained):
    result, out, images, messages = trained
    threshold = result.head.unknown.threshold
    assert Sidecar.read(out / "g.tflite").unknown_threshold == threshold
    assert any(m.startswith(f"Checked {INT8}") and "unknown score within" in m for m in messages)
    paths = sorted(images.rglob("*.jpg"))
    pixels = decode_sample(paths, len(paths), tiny_spec().input_size, tiny_spec().input_size)[1]
    normalization = (tiny_spec().input_mean, tiny_spec().input_std)
    float_p, float_s = load_model(out / "g.pb").predict_with_unknown(pixels, normalization)
    int8 = load_model(out / "g.tflite")
    assert int8.has_unknown_score
    int8_p, int8_s = int8.predict_with_unknown(pixels, normalization)
    assert (int8_p.argmax(1) == float_p.argmax(1)).all()
    assert (np.abs(int8_s - float_s) <= INT8_UNKNOWN_TOLERANCE * np.maximum(float_s, threshold)).all()
    assert not np.allclose(int8_s, float_s, rtol=1e-4)  # the backbone really is int8: its rounding shows


def test_the_backbone_is_int8_and_the_tail_float_with_int8_weights(trained):
    _, out, _, _ = trained
    tensors = {t["name"]: t for t in tflite_interpreter(out / "g.tflite").get_tensor_details()}
    outputs = [d["name"] for d in tflite_interpreter(out / "g.tflite").get_output_details()]
    assert outputs == ["final_result", UNKNOWN_SCORE_NAME]
    assert all(tensors[name]["dtype"] == np.float32 for name in outputs)
    assert any(t["dtype"] == np.int8 and name.endswith("Conv2D1") for name, t in tensors.items())  # conv weights
    packed = [t for name, t in tensors.items() if name.endswith("_int8")]
    assert len(packed) == 2  # the head's and the whitening's weights, per output channel
    assert all(len(t["quantization_parameters"]["scales"]) == t["shape"][0] for t in packed)


def test_the_check_fails_when_the_int8_score_is_wrong_or_the_file_broken(trained, tmp_path, monkeypatch):
    result, out, images, _ = trained
    contract = Sidecar.read(out / "g.pb")
    checks = _check_images(result, out)
    check_export(out / "g.tflite", INT8, checks, contract.labels, exact=False)
    doubled = dataclasses.replace(checks, unknown=checks.unknown * 2 + contract.unknown_threshold)
    with pytest.raises(ExportMismatch, match="of max\\(score, threshold\\) apart allowed"):
        check_export(out / "g.tflite", INT8, doubled, contract.labels, exact=False)
    # a broken file: the tail's weights rounded to -1, 0 or 1 times their channel's scale
    monkeypatch.setattr(int8_tail, "INT8_WEIGHT_LEVELS", 1)
    broken = write_tflite_model(out / "g.pb", tmp_path / "broken.tflite", contract, "int8", "float",
                                sorted(images.rglob("*.jpg")), 50)
    with pytest.raises(ExportMismatch, match="unknown score"):
        check_export(broken, INT8, checks, contract.labels, exact=False)


def test_uint8_io_stays_integer_without_the_score(trained, tmp_path):
    result, out, images, _ = trained
    contract = Sidecar.read(out / "g.pb")
    written = write_tflite_model(out / "g.pb", tmp_path / "u8.tflite", contract, "int8", "uint8",
                                 sorted(images.rglob("*.jpg")), 50)
    assert Sidecar.read(written).unknown_threshold is None
    interpreter = tflite_interpreter(written)
    assert [d["dtype"] for d in interpreter.get_input_details() + interpreter.get_output_details()] == [np.uint8] * 2
    check = check_export(written, INT8, _check_images(result, out), contract.labels, exact=False)
    assert check.unknown_difference is None  # written without the score on purpose: nothing to compare


def test_a_graph_without_a_head_on_its_features_is_refused(tmp_path):
    backbone = tmp_path / "backbone.pb"
    backbone.write_bytes(tiny_graph_def().SerializeToString())
    contract = Sidecar(output_layer="Tiny/AvgPool", input_height=tiny_spec().input_size,
                       input_width=tiny_spec().input_size, feature_size=tiny_spec().feature_size)
    pixels = np.random.default_rng(0).integers(0, 256, (10, contract.input_height, contract.input_width, 3),
                                               dtype=np.uint8)
    with pytest.raises(UserError, match="cannot keep the head of the graph in float"):
        convert_graph(backbone, contract, "int8", "float", pixels)
