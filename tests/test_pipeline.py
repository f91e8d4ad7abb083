"""The whole retrain job on generated images and the tiny backbone."""
import numpy as np
import pytest

from retrain.cache.views import DISTORTION_FLAG_COPIES
from retrain.data.distortions import Distortions
from retrain.label.labeler import GraphLabeler
from retrain.pipeline import RetrainOptions, run_retrain
from retrain.training.head import TrainingConfig
from tests.conftest import tiny_spec


def options(image_dir, tmp_path, model_dir, **changes):
    fields = dict(image_dir=str(image_dir), architecture=tiny_spec(), output_graph=str(tmp_path / "g.pb"),
                  output_labels=str(tmp_path / "labels.txt"), summaries_dir=str(tmp_path / "logs"),
                  model_dir=str(model_dir), bottleneck_dir=str(tmp_path / "bn"),
                  training=TrainingConfig(steps=300, learning_rate=0.5, seed=1),
                  testing_percentage=25, validation_percentage=25)
    fields.update(changes)
    return RetrainOptions(**fields)


def test_retrain_learns_separable_classes_and_exports(image_dir, tmp_path, tiny_model_dir):
    messages = []
    result = run_retrain(options(image_dir, tmp_path, tiny_model_dir), log=messages.append)
    assert result.labels == ["blue", "green", "red"]
    assert result.test_report is not None and result.test_report.accuracy >= 0.9
    assert any(m.startswith("Final test accuracy") for m in messages)
    assert (tmp_path / "labels.txt").read_text().split("\n")[:3] == ["blue", "green", "red"]
    assert list((tmp_path / "logs").rglob("events.out.tfevents*"))
    labeler = GraphLabeler(tmp_path / "g.pb", tmp_path / "labels.txt")
    red = sorted((image_dir / "red").glob("*.jpg"))
    predicted = [labeler.labels[int(np.argmax(p))] for _, p, _ in labeler.predict_files(red)]
    assert predicted.count("red") >= len(red) - 1


def test_same_seed_gives_bit_identical_graphs(image_dir, tmp_path, tiny_model_dir):
    run_retrain(options(image_dir, tmp_path / "a", tiny_model_dir), log=lambda m: None)
    run_retrain(options(image_dir, tmp_path / "b", tiny_model_dir), log=lambda m: None)
    assert (tmp_path / "a" / "g.pb").read_bytes() == (tmp_path / "b" / "g.pb").read_bytes()


def test_distortion_flags_train_on_cached_views(image_dir, tmp_path, tiny_model_dir):
    """Poets' distortion flags alone now mean cached views of the training images, not per-step distortion."""
    opts = options(image_dir, tmp_path, tiny_model_dir, training=TrainingConfig(steps=20, learning_rate=0.5,
                                                                              train_batch_size=8, seed=0),
                   distortions=Distortions(flip_left_right=True, random_crop=10, random_scale=10,
                                           random_brightness=10))
    messages = []
    result = run_retrain(opts, log=messages.append)
    assert any(f"{DISTORTION_FLAG_COPIES} distorted views per training image" in m for m in messages)
    assert any(f"Augmented views: 0 of {len(result.data['train'].labels) * DISTORTION_FLAG_COPIES} found" in m
               for m in messages)
    assert result.history[-1].step == 20


def test_intermediate_graphs_are_stored(image_dir, tmp_path, tiny_model_dir):
    run_retrain(options(image_dir, tmp_path, tiny_model_dir, intermediate_store_frequency=100,
                        intermediate_output_graphs_dir=str(tmp_path / "inter")), log=lambda m: None)
    assert sorted(p.name for p in (tmp_path / "inter").iterdir()) == ["intermediate_100.pb", "intermediate_200.pb"]


def test_evaluation_interval_is_honoured(image_dir, tmp_path, tiny_model_dir):
    opts = options(image_dir, tmp_path, tiny_model_dir,
                   training=TrainingConfig(steps=35, eval_step_interval=10, learning_rate=0.5, seed=0))
    result = run_retrain(opts, log=lambda m: None)
    assert [p.step for p in result.history] == [10, 20, 30, 35]


def test_class_with_only_unreadable_images_is_a_user_error(tmp_path, tiny_model_dir, image_dir):
    from retrain.errors import UserError
    bad = image_dir / "broken"
    bad.mkdir()
    for i in range(3):
        (bad / f"x{i}.jpg").write_bytes(b"")
    with pytest.raises(UserError, match="'broken' have no usable training images"):
        run_retrain(options(image_dir, tmp_path, tiny_model_dir), log=lambda m: None)
