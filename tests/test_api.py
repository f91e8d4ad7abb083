"""The Python API on the tiny backbone: train, save, load, predict, evaluate, relabel, undo; and its errors."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrain
from retrain.models.architectures import ARCHITECTURES
from retrain.pipeline import run_retrain
from tests.conftest import PROJECT, tiny_retrain_options, tiny_spec


@pytest.fixture
def tiny_architecture(monkeypatch) -> str:
    """The tiny backbone as a registry row, so ``architecture="tiny"`` names it as a real one would be."""
    monkeypatch.setitem(ARCHITECTURES, "tiny", tiny_spec())
    return "tiny"


def tiny_keywords(work: Path, model_dir: Path, architecture: str, steps: int = 20) -> dict:
    """The keywords that make ``retrain.train`` run what ``tiny_retrain_options`` describes."""
    return dict(architecture=architecture, model_dir=str(model_dir), output_graph=str(work / "out" / "g.pb"),
                output_labels=str(work / "out" / "labels.txt"), summaries_dir=str(work / "logs"),
                bottleneck_dir=str(work / "bn"), how_many_training_steps=steps, random_seed=0, learning_rate=0.5)


@pytest.fixture
def model(image_dir, tmp_path, tiny_model_dir) -> retrain.Model:
    """A model trained by the library itself (not through the API), loaded through the API."""
    options = tiny_retrain_options(image_dir, tiny_model_dir, tmp_path / "lib", steps=5)
    run_retrain(options, log=lambda line: None)
    return retrain.load(options.output_graph)


def test_train_save_load_predict_evaluate_relabel_undo(image_dir, tmp_path, tiny_model_dir, tiny_architecture):
    lines = []
    trained = retrain.train(image_dir, log=lines.append,
                            **tiny_keywords(tmp_path / "api", tiny_model_dir, tiny_architecture, steps=200))
    # The same run through the library: the keywords and their defaults are the CLI's, so the graphs are identical.
    library = tiny_retrain_options(image_dir, tiny_model_dir, tmp_path / "lib", steps=200)
    library = dataclasses.replace(library, training=dataclasses.replace(library.training, learning_rate=0.5))
    run_retrain(library, log=lambda line: None)
    assert (tmp_path / "api" / "out" / "g.pb").read_bytes() == Path(library.output_graph).read_bytes()
    assert trained.labels == ["blue", "green", "red"]
    assert any(line.startswith("Final test accuracy") for line in lines)
    assert trained.test_report is not None and trained.history and trained.history[-1].step == 200
    assert "frozen graph" in repr(trained) and "blue, green, red" in repr(trained)

    written = trained.save(tmp_path / "saved" / "flowers.pb")
    assert [path.name for path in written] == ["flowers.pb", "flowers.txt", "flowers.json"]
    assert written[0].read_bytes() == (tmp_path / "api" / "out" / "g.pb").read_bytes()
    assert written[1].read_text() == "blue\ngreen\nred\n"
    with pytest.raises(retrain.UserError, match="loaded from"):
        trained.save(tmp_path / "api" / "out" / "g.pb")

    model = retrain.load(written[0])  # labels and input size from the copy's sidecar alone
    assert model.labels == trained.labels and model.input_size == trained.input_size
    assert model.test_report is None and model.history == []
    reds = sorted(str(path) for path in (image_dir / "red").glob("*.jpg"))[:4]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    from_files = model.predict([*reds, broken])
    assert [p.source for p in from_files] == [*reds, broken]
    assert [p.label for p in from_files[:4]] == ["red"] * 4
    assert from_files[4].label is None and "broken.jpg" in from_files[4].error and from_files[4].probabilities == {}
    for prediction in from_files[:4]:
        assert list(prediction.probabilities) == model.labels and prediction.error is None
        assert prediction.score == max(prediction.probabilities.values())
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)

    # Arrays of any size are resized as decoded files are: an image's pixels and its file get the same answer.
    pixels = [np.asarray(Image.open(path).convert("RGB")) for path in reds]
    from_arrays = model.predict(pixels, batch_size=3)
    assert [p.source for p in from_arrays] == [0, 1, 2, 3]
    for from_file, from_array in zip(from_files, from_arrays):
        assert from_array.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    mixed = model.predict([reds[0], np.stack(pixels)[1]])
    assert [p.source for p in mixed] == [reds[0], 1] and mixed[1].label == from_files[1].label
    assert [p.source for p in model.predict(np.stack(pixels[:2]))] == [0, 1]  # a batch array is one image a row

    report = model.evaluate(image_dir)
    assert report.count == 36 and report.accuracy >= 0.9

    result = retrain.relabel(model, image_dir, tmp_path / "sorted", min_confidence=0.0, batch_size=8)
    assert result.count("copied") == 36 and result.report_path.is_file()
    assert sum(1 for _ in (tmp_path / "sorted").rglob("*.jpg")) == 36
    assert retrain.undo(result.journal_path, log=lambda line: None) == 0
    assert not list((tmp_path / "sorted").rglob("*.jpg"))
    assert sum(1 for _ in image_dir.rglob("*.jpg")) == 36  # copies are undone, the originals stay


def test_a_saved_model_and_tflite_save_with_their_sidecars(model, tmp_path):
    from retrain.export.deploy import ExportRequest, export_model
    exported = {}
    for target, output in (("saved_model", tmp_path / "exported_sm"), ("tflite", tmp_path / "exported.tflite")):
        list(export_model(model.labeler, ExportRequest(str(model.path), target, str(output))))
        exported[target] = retrain.load(output)
    image = np.full((40, 50, 3), 200, np.uint8)
    expected = model.predict(image)[0].probabilities
    for target, name in (("saved_model", "copy_sm"), ("tflite", "copy.tflite")):
        written = exported[target].save(tmp_path / "copies" / name)
        assert [path.name for path in written] == [name, Path(name).with_suffix(".txt").name,
                                                   Path(name).with_suffix(".json").name]
        copy = retrain.load(written[0])
        assert copy.format == exported[target].format
        assert copy.predict(image)[0].probabilities == pytest.approx(expected, abs=1e-4)


def test_bad_training_input_raises_user_errors_naming_the_keyword(image_dir, tmp_path, tiny_model_dir,
                                                                  tiny_architecture):
    keywords = tiny_keywords(tmp_path, tiny_model_dir, tiny_architecture)
    with pytest.raises(retrain.UserError, match="how_many_training_steps"):
        retrain.train(image_dir, **{**keywords, "how_many_training_step": 5})
    with pytest.raises(retrain.UserError, match="how_many_training_steps") as zero_steps:
        retrain.train(image_dir, **{**keywords, "how_many_training_steps": 0})
    assert "--" not in str(zero_steps.value)
    with pytest.raises(retrain.UserError, match="learning_rate"):
        retrain.train(image_dir, **{**keywords, "learning_rate": "fast"})
    with pytest.raises(retrain.UserError, match="image_dir"):
        retrain.train(tmp_path / "no_such_folder", **keywords)
    assert not (tmp_path / "out" / "g.pb").exists()


def test_bad_input_to_a_model_raises_user_errors_naming_the_keyword(model, image_dir, tmp_path):
    with pytest.raises(retrain.UserError, match="path .*no_such.pb does not exist"):
        retrain.load(tmp_path / "no_such.pb")
    with pytest.raises(retrain.UserError, match="path must be a path"):
        retrain.load(None)
    with pytest.raises(retrain.UserError, match="missing.jpg does not exist"):
        model.predict([image_dir / "red" / "red_0.jpg", tmp_path / "missing.jpg"])
    with pytest.raises(retrain.UserError, match=r"images\[0\] is a float64 array"):
        model.predict(np.zeros((8, 8, 3)))
    with pytest.raises(retrain.UserError, match=r"images\[1\] must be a path or a uint8 array"):
        model.predict([image_dir / "red" / "red_0.jpg", 7])
    with pytest.raises(retrain.UserError, match="batch_size"):
        model.predict([image_dir / "red" / "red_0.jpg"], batch_size=0)
    with pytest.raises(retrain.UserError, match="image_dir"):
        model.evaluate(tmp_path / "no_such_folder")
    with pytest.raises(retrain.UserError, match="did you mean 'min_confidence'"):
        retrain.relabel(model, image_dir, tmp_path / "sorted", min_confidance=0.2)
    with pytest.raises(retrain.UserError, match="min_confidence"):
        retrain.relabel(model, image_dir, tmp_path / "sorted", min_confidence="high")
    with pytest.raises(retrain.UserError, match="model must be a retrain.Model"):
        retrain.relabel(str(model.path), image_dir, tmp_path / "sorted")
    with pytest.raises(retrain.UserError, match="journal"):
        retrain.undo(tmp_path / "no_journal.jsonl")
    assert not (tmp_path / "sorted").exists()


def test_import_retrain_is_cheap_and_names_the_api():
    """``import retrain`` must not import TensorFlow (the CLI silences its start-up first); the names load lazily."""
    code = ("import sys, retrain; assert 'tensorflow' not in sys.modules; "
            "from retrain import Model, Prediction, UserError, load, relabel, train, undo; "
            "assert set(retrain.__all__) <= set(dir(retrain)); print(train.__module__, UserError.__module__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["retrain.api.jobs", "retrain.errors"]


def test_no_subpackage_shadows_a_public_name():
    """``retrain.<name>`` is set to a subpackage once it is imported: none may be called like a public function."""
    for name in retrain.__all__:
        assert not (PROJECT / "retrain" / name).exists() and not (PROJECT / "retrain" / f"{name}.py").exists()
