"""TFLite (float, float16, dynamic, int8) and SavedModel exports: contract, checks, loading by content."""
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import evaluate as evaluate_script
from retrain.cli import export as export_script
from retrain.cli import label_image as label_image_script
from retrain.cli.common import run_cli
from retrain.data.decode import load_rgb
from retrain.data.images import split_images
from retrain.errors import ExportMismatch, UserError, command_line_spelling
from retrain.export.check import CheckImages, agreeing, check_export, predict_export
from retrain.export.deploy import ExportRequest, export_model
from retrain.label.labeler import GraphLabeler
from retrain.models.model_file import FROZEN_GRAPH, SAVED_MODEL, TFLITE, detect_format, load_model, tflite_interpreter
from retrain.pipeline import run_retrain
from tests.conftest import FLOWERS, TINY_SIZE, make_dataset
from tests.test_pipeline import options as pipeline_options
from tests.test_poets_graph import POETS_FLAGS, poets_graph, poets_predictions  # noqa: F401 (fixture)
from tests.test_relabel import LABELS, tiny_graph  # noqa: F401 (fixture)

VARIANTS = {"none": "float", "float16": "float", "dynamic": "float", "int8": "float", "int8-uint8": "uint8"}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("check") / "images", per_class=6)


@pytest.fixture(scope="module")
def exports(tiny_graph, images, tmp_path_factory):  # noqa: F811
    """Every TFLite variant and a SavedModel of the tiny classifier, made by export_model as scripts.export does."""
    out = tmp_path_factory.mktemp("exports")
    source = GraphLabeler(tiny_graph)
    written, lines = {}, {}
    for variant, io in VARIANTS.items():
        written[variant] = out / f"{variant}.tflite"
        lines[variant] = list(export_model(source, ExportRequest(
            str(tiny_graph), "tflite", str(written[variant]), image_dir=str(images),
            quantize=variant.split("-")[0], tflite_io=io)))
    written["saved_model"] = out / "saved_model"
    lines["saved_model"] = list(export_model(source, ExportRequest(str(tiny_graph), "saved_model",
                                                                   str(written["saved_model"]), image_dir=str(images))))
    return written, lines


def pixels_of(image_dir):
    paths = sorted(image_dir.rglob("*.jpg"))
    return paths, np.stack([load_rgb(p, TINY_SIZE, TINY_SIZE) for p in paths])


def test_formats_are_detected_by_content_not_name(exports, tiny_graph, tmp_path):  # noqa: F811
    written, _ = exports
    disguised = tmp_path / "model.pb"
    shutil.copy(written["none"], disguised)
    assert [detect_format(p) for p in (tiny_graph, written["saved_model"], disguised)] == \
        [FROZEN_GRAPH, SAVED_MODEL, TFLITE]
    assert load_model(disguised).format == TFLITE
    bogus = tmp_path / "bogus.tflite"
    bogus.write_text("not a model at all, though it has a promising name")
    with pytest.raises(UserError, match="none of the model formats"):
        load_model(bogus)
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="not a SavedModel"):
        load_model(tmp_path / "folder")


def test_float_exports_match_the_graph_and_quantised_ones_agree_mostly(exports, tiny_graph, images):  # noqa: F811
    written, lines = exports
    paths, pixels = pixels_of(images)
    expected = GraphLabeler(tiny_graph).predict(pixels)
    for variant in ("none", "saved_model"):
        np.testing.assert_allclose(predict_export(written[variant], pixels), expected, atol=1e-5)
        assert "same top-1 as the source graph on all" in lines[variant][0]
    for variant in ("float16", "dynamic", "int8", "int8-uint8"):
        probabilities = predict_export(written[variant], pixels)
        assert np.mean(probabilities.argmax(1) == expected.argmax(1)) >= 0.9, variant
        assert "agreement on" in lines[variant][0] and "float" in lines[variant][0]
    assert lines["int8"][-1].startswith(f"Wrote {written['int8']}")
    assert (written["int8"].with_suffix(".txt").read_text().split(), ) == (LABELS, )


def test_tflite_keeps_the_poets_contract(exports, tiny_graph, images):  # noqa: F811
    """Read by hand, as an Android app would: input ``input`` [1, H, W, 3], output ``final_result`` softmax;
    uint8 I/O is the normalised input quantised with the input tensor's own scale and zero point."""
    written, _ = exports
    paths, pixels = pixels_of(images)
    expected = GraphLabeler(tiny_graph).predict(pixels).argmax(1)
    normalised = (pixels.astype(np.float32) - 127.5) / 127.5
    for variant in ("none", "int8-uint8"):
        interpreter = tflite_interpreter(written[variant])
        (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert (source["name"], result["name"]) == ("input", "final_result")
        assert list(source["shape"]) == [1, TINY_SIZE, TINY_SIZE, 3]
        answers = []
        for image in normalised:
            scale, zero_point = source["quantization"]
            fed = image if variant == "none" else np.clip(np.round(image / scale + zero_point), 0, 255).astype(np.uint8)
            interpreter.set_tensor(source["index"], fed[None])
            interpreter.invoke()
            answers.append(int(interpreter.get_tensor(result["index"]).argmax()))
        assert np.mean(np.array(answers) == expected) >= (1.0 if variant == "none" else 0.9)


def test_loading_tflite_raises_no_deprecation_warning(exports):
    written, _ = exports
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(written["none"]).predict(np.zeros((2, TINY_SIZE, TINY_SIZE, 3), np.float32))
    assert not [w for w in caught if "deprecated" in str(w.message)]


def test_a_float_export_that_disagrees_is_an_error_naming_file_and_image(exports, tiny_graph, images):  # noqa: F811
    written, _ = exports
    paths, pixels = pixels_of(images)
    reference = GraphLabeler(tiny_graph).predict(pixels)
    sidecar = written["none"].with_suffix(".json")
    good = sidecar.read_text()
    try:
        # the classic mistake: a [0, 1] input where the model takes [-1, 1]
        sidecar.write_text(good.replace('"input_mean": 127.5', '"input_mean": 0').replace('"input_std": 127.5',
                                                                                          '"input_std": 255'))
        with pytest.raises(ExportMismatch, match=rf"none.tflite \(TFLite float\) disagrees .* on {images}/"):
            check_export(written["none"], "TFLite float", CheckImages(paths, pixels, reference), LABELS, exact=True)
    finally:
        sidecar.write_text(good)
    check = check_export(written["none"], "TFLite float", CheckImages(paths, pixels, reference), LABELS, exact=True)
    assert check.agreement == 1.0 and check.max_difference < 1e-5


def test_cached_float16_answers_bound_the_logits_and_count_near_ties_as_ties():
    """The check's reference may come from float16 features: the bound must hold, and only a tie may pass."""
    from retrain.cache.store import rounding_error
    from retrain.training.head import DenseLayer, Head
    rng = np.random.default_rng(0)
    head = Head([DenseLayer(rng.normal(0, 0.3, (64, 16)).astype(np.float32), rng.normal(0, 1, 16).astype(np.float32)),
                 DenseLayer(rng.normal(0, 0.3, (16, 3)).astype(np.float32), np.zeros(3, np.float32))])
    exact = np.abs(rng.normal(0, 2, (500, 64))).astype(np.float32) * (rng.random((500, 64)) > 0.3)
    cached = exact.astype(np.float16)
    moved = np.abs(np.log(head.predict_proba(cached)) - np.log(head.predict_proba(exact)))
    bound = head.logit_error(rounding_error(cached))
    # log-probabilities move by the logits' change plus the normaliser's, each within the bound
    assert (moved <= bound + bound.max(axis=1, keepdims=True) + 1e-6).all() and bound.max() < 0.1

    def agrees(reference_top: float, error: float | None) -> bool:
        """Whether an export saying class 1 agrees with a reference giving class 0 ``reference_top``."""
        reference = np.array([[reference_top, 1 - reference_top - 1e-3, 1e-3]])
        images = CheckImages([Path("a.jpg")], np.zeros((1, 4, 4, 3), np.uint8), reference,
                             logit_error=None if error is None else np.full((1, 3), error))
        return bool(agreeing(images, np.array([[0.2, 0.7, 0.1]]))[0])

    assert agrees(0.4997, error=1e-3)  # logits 0.0008 apart, each possibly 0.001 off: a tie
    assert not agrees(0.4997, error=None)  # the same answers from an exact reference: a real disagreement
    assert not agrees(0.6, error=1e-3)  # logits 0.4 apart: no rounding explains it


def test_poets_graph_converts_and_scores_as_the_source(poets_graph, images, tmp_path, capsys):  # noqa: F811
    graph, labels, _ = poets_graph
    output = tmp_path / "poets.tflite"
    code = export_script.main(["--graph", str(graph), "--labels", str(labels), *POETS_FLAGS, "--to", "tflite",
                               "--output", str(output), "--image_dir", str(images)])
    assert code == 0
    assert "same top-1 as the source graph on all 18 check images" in capsys.readouterr().out
    paths, pixels = pixels_of(images)
    model = load_model(output)
    assert list(model.predict(pixels, (127.5, 127.5)).argmax(1)) == poets_predictions(graph, paths)


def test_poets_graph_converts_to_int8_with_its_head_in_float(poets_graph, images, tmp_path, capsys):  # noqa: F811
    graph, labels, _ = poets_graph  # no sidecar: the head is found as the fully connected layer on a whole vector
    output = tmp_path / "poets_int8.tflite"
    code = export_script.main(["--graph", str(graph), "--labels", str(labels), *POETS_FLAGS, "--to", "tflite",
                               "--quantize", "int8", "--output", str(output), "--image_dir", str(images)])
    assert code == 0 and "TFLite int8: " in capsys.readouterr().out
    types = {t["name"]: t["dtype"] for t in tflite_interpreter(output).get_tensor_details()}
    assert types["final_result"] == np.float32 and np.int8 in types.values()


def test_impossible_requests_are_refused_before_any_work(tiny_graph, tmp_path):  # noqa: F811
    few = make_dataset(tmp_path / "few", per_class=3)
    cases = {
        "needs at least 10 readable calibration images, found 9": ["--quantize", "int8", "--image_dir", str(few)],
        "--tflite_io 'uint8' needs --quantize 'int8'": ["--tflite_io", "uint8"],
        "calibrates on real images; pass --image_dir": ["--quantize", "int8"],
    }
    for message, args in cases.items():
        with pytest.raises(UserError, match=message), command_line_spelling():
            export_script.main(["--graph", str(tiny_graph), *args, "--to", "tflite",
                                "--output", str(tmp_path / "x.tflite")])
    assert not (tmp_path / "x.tflite").exists()


@pytest.mark.integration
def test_real_mobilenet_to_int8_agrees_with_the_float_graph(flowers_retrained, tmp_path):
    from retrain.data.decode import decode_sample
    from retrain.export.deploy import write_tflite_model
    graph = flowers_retrained.out / "graph.pb"
    records = split_images(FLOWERS)
    labeler = GraphLabeler(graph)
    output = write_tflite_model(graph, tmp_path / "flowers_int8.tflite", labeler.config, "int8", "float",
                                [r.path for r in records if r.split == "train"], 100)
    held_out = [r for r in records if r.split != "train"]
    paths, pixels = decode_sample([r.path for r in held_out], len(held_out), 224, 224)
    truths = np.array([labeler.labels.index(p.parent.name) for p in paths])
    check = check_export(output, "TFLite int8", CheckImages(paths, pixels, labeler.predict(pixels), truths),
                         labeler.labels, exact=False, reference_size=graph.stat().st_size)
    assert check.agreement >= 0.95, check.summary()
    assert check.size <= check.reference_size / 3, check.summary()


def test_label_image_and_evaluate_take_every_format(exports, tiny_graph, images, capsys):  # noqa: F811
    written, _ = exports
    expected = evaluate_script.main(["--graph", str(tiny_graph), "--image_dir", str(images)])
    graph_report = capsys.readouterr().out
    for variant in ("none", "saved_model", "int8-uint8"):
        assert evaluate_script.main(["--graph", str(written[variant]), "--image_dir", str(images)]) == expected == 0
        report = capsys.readouterr().out
        assert report.splitlines()[0].startswith("Accuracy = ") and "Confusion matrix" in report
        if variant != "int8-uint8":
            assert report == graph_report
    image = next(images.rglob("*.jpg"))
    assert label_image_script.main(["--graph", str(written["none"]), "--image", str(image), "--top_k", "1"]) == 0
    assert capsys.readouterr().out.split()[0] == image.parent.name


def test_unusable_graphs_are_one_line_exit_2(exports, images, tmp_path, capsys):
    written, _ = exports
    bogus = tmp_path / "bogus.pb"
    bogus.write_bytes(b"\x00\x01 definitely not a model")
    two_labels = tmp_path / "two.txt"
    two_labels.write_text("a\nb\n")
    image = next(images.rglob("*.jpg"))
    cases = {"none of the model formats": [str(bogus)],
             "has 3 outputs but the labels file has 2 labels": [str(written["int8"]), "--labels", str(two_labels)]}
    for message, args in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            run_cli(label_image_script.main, ["--graph", *args, "--image", str(image)])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1 and message in error, error


def test_retrain_writes_and_checks_every_export_before_saying_wrote(image_dir, tmp_path, tiny_model_dir):
    messages = []
    run_retrain(pipeline_options(image_dir, tmp_path, tiny_model_dir, saved_model_dir=str(tmp_path / "sm"),
                                 output_tflite=str(tmp_path / "g.tflite"), quantize="int8", quantize_samples=50,
                                 tflite_io="uint8"), log=messages.append)
    checked = [m for m in messages if m.startswith("Checked ")]
    assert [m.split(":")[0] for m in checked] == ["Checked frozen graph", "Checked SavedModel", "Checked TFLite int8"]
    validation = sum(r.split == "validation" for r in split_images(image_dir, 25, 25))  # the check images
    assert f"same top-1 as the trained model on all {validation} check images" in checked[0]
    assert f"agreement on {validation} check images, accuracy" in checked[2]
    first_wrote = next(i for i, m in enumerate(messages) if m.startswith("Wrote "))
    assert first_wrote > messages.index(checked[-1])
    for model in (tmp_path / "g.pb", tmp_path / "sm", tmp_path / "g.tflite"):
        labeler = GraphLabeler(model)  # each with its own sidecar: no flags
        assert labeler.labels == LABELS
    assert tflite_interpreter(tmp_path / "g.tflite").get_input_details()[0]["dtype"] == np.uint8


def test_retrain_refuses_an_export_that_does_not_reproduce_the_cached_bottlenecks(image_dir, tmp_path, tiny_model_dir,
                                                                                 monkeypatch):
    """The reference is the head on the cache: an export built with other preprocessing than the cache fails."""
    import retrain.pipeline as pipeline
    from retrain.models.backbones import Backbone
    real_export = pipeline.export_frozen_graph

    def export_reading_bgr(backbone, head, path, name):  # the classic mistake of Caffe-era models
        swapped = Backbone(backbone.spec, lambda images: backbone.features_from_normalized(images[..., ::-1]),
                           backbone.feature_size)
        real_export(swapped, head, path, name)
    monkeypatch.setattr(pipeline, "export_frozen_graph", export_reading_bgr)
    messages = []
    with pytest.raises(ExportMismatch, match="g.pb \\(frozen graph\\) disagrees with the trained model on"):
        run_retrain(pipeline_options(image_dir, tmp_path, tiny_model_dir), log=messages.append)
    assert not [m for m in messages if m.startswith("Wrote ")]


def test_run_cli_reports_a_failed_export_check_in_one_line_with_exit_1(capsys):
    def main(argv):
        raise ExportMismatch("out/g.tflite (TFLite float) disagrees with the trained model on a.jpg")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: out/g.tflite (TFLite float) disagrees with the trained model on a.jpg\n"


def test_retrain_refuses_bad_export_flags_before_any_work(image_dir, tmp_path, tiny_model_dir):
    few = make_dataset(tmp_path / "few", per_class=3)
    cases = {"applies to the TFLite file; add output_tflite=PATH": (image_dir, dict(quantize="int8")),
             "needs at least 10 readable calibration images, found 9": (
                 few, dict(output_tflite=str(tmp_path / "g.tflite"), quantize="int8", testing_percentage=0,
                           validation_percentage=0))}
    for message, (images, changes) in cases.items():
        messages = []
        with pytest.raises(UserError, match=message):
            run_retrain(pipeline_options(images, tmp_path, tiny_model_dir, **changes), log=messages.append)
        assert not any(m.startswith("Step ") for m in messages)  # before training


def test_every_format_is_checked_for_unsafe_ops_before_it_runs(exports, tmp_path):
    from tests.hostile_files import graph_writing_file, saved_model_writing_file
    written, _ = exports
    saved_model_writing_file(tmp_path / "evil_sm", tmp_path / "x")
    (tmp_path / "evil.pb").write_bytes(graph_writing_file(tmp_path / "x").SerializeToString())
    for evil in (tmp_path / "evil_sm", tmp_path / "evil.pb"):
        with pytest.raises(UserError, match=f"{evil.name} contains op WriteFile"):
            load_model(evil)
    assert not (tmp_path / "x").exists()
    load_model(written["int8-uint8"])  # our own exports hold only pure ops: TFLite builtins pass the check


def test_gradcam_asks_for_the_frozen_graph_of_a_converted_model(exports, images, tmp_path):
    written, _ = exports
    with pytest.raises(UserError, match="Grad-CAM needs a frozen graph .* is a TFLite; pass the frozen graph"):
        evaluate_script.main(["--graph", str(written["none"]), "--image_dir", str(images),
                              "--html", str(tmp_path / "report")])
