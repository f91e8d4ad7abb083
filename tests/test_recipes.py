"""--recipe best: its table, explicit flags winning, its errors, and keep-or-revert in a run on the tiny backbone."""
from __future__ import annotations

import json

import pytest

from retrain.errors import UserError
from retrain.job_options import retrain_options
from retrain.models.architectures import ARCHITECTURES
from retrain.options import default, options_of
from retrain.pipeline import RetrainOptions, run_retrain
from retrain.training.finetune import FineTuneConfig
from retrain.training.head import TrainingConfig
from retrain.training.recipes import BEST_RECIPES, VIEW_OPTIONS
from tests.conftest import make_dataset
from tests.test_cli import run_script
from tests.tiny_blocks import tiny_blocks_model_dir, tiny_blocks_spec

MOBILENET = BEST_RECIPES["mobilenet_1.0_224"]


def test_every_recipe_is_a_registry_row_set_in_retrain_options():
    names = {option.name for option in options_of("retrain")}
    for architecture, recipe in BEST_RECIPES.items():
        assert architecture in ARCHITECTURES
        assert set(recipe.fine_tuning) <= names and set(recipe.views) <= set(VIEW_OPTIONS) and recipe.source
    # the top 4 blocks above MobileNet v1's 14x14x512 cut: Conv2d_10 to Conv2d_13
    cut = ARCHITECTURES["mobilenet_1.0_224"].fine_tune_cuts[MOBILENET.fine_tuning["fine_tune_blocks"] - 1]
    assert cut == "MobilenetV1/MobilenetV1/Conv2d_9_pointwise/Relu6:0"


def test_the_recipe_sets_its_values_and_says_so_in_one_line():
    options = retrain_options({"image_dir": "photos", "recipe": "best"})
    tuning = MOBILENET.fine_tuning
    assert (options.fine_tune.blocks, options.augment_copies, options.fine_tune.epochs) == (
        tuning["fine_tune_blocks"], tuning["augment_copies"], tuning["fine_tune_epochs"])
    assert (options.fine_tune.learning_rate, options.fine_tune.schedule, options.training.weight_decay) == (
        tuning["fine_tune_learning_rate"], tuning["fine_tune_schedule"], tuning["weight_decay"])
    assert options.distortions.flip_left_right is MOBILENET.views["flip_left_right"]
    assert options.recipe_line.startswith("Recipe best for mobilenet_1.0_224 (issue 20's independent recipe): set "
                                          "fine_tune_blocks=4, augment_copies=4, fine_tune_epochs=4, ")
    assert "\n" not in options.recipe_line and "kept your" not in options.recipe_line


def test_without_a_recipe_nothing_changes():
    options = retrain_options({"image_dir": "photos"})
    assert options.recipe_line == "" and options.fine_tune == FineTuneConfig() and options.augment_copies == 0


def test_options_given_win_even_at_their_default_and_view_flags_replace_the_recipes_views():
    options = retrain_options({"image_dir": "photos", "recipe": "best", "fine_tune_epochs": 1.5,
                               "weight_decay": default("weight_decay"), "random_brightness": 20.0})
    assert options.fine_tune.epochs == 1.5 and options.training.weight_decay == default("weight_decay")
    assert options.fine_tune.blocks == MOBILENET.fine_tuning["fine_tune_blocks"]
    assert not options.distortions.flip_left_right and options.distortions.random_brightness == 20
    assert options.recipe_line.endswith("; kept your fine_tune_epochs, weight_decay; your view flags replace its "
                                        "views")


def test_a_flag_typed_at_its_default_wins_on_the_command_line_too():
    from retrain.cli.common import given_options
    from retrain.cli.retrain import build_parser
    given = given_options(build_parser(), ["--image_dir", "photos", "--recipe", "best", "--fine_tune_blocks", "0"])
    assert given == {"image_dir": "photos", "recipe": "best", "fine_tune_blocks": 0}
    assert retrain_options(given).fine_tune.blocks == 0


@pytest.mark.parametrize("values, message", [
    ({"architecture": "inception_v3"}, "recipe=best has no recipe for inception_v3; the architectures with one: "
                                       "mobilenet_1.0_224"),
    ({"validation_percentage": 0}, "recipe=best keeps fine-tuning only if the validation images prove it pays; give "
                                   "validation_percentage above 0"),
])
def test_a_recipe_it_cannot_follow_is_one_error(values, message):
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        retrain_options({"image_dir": "photos", "recipe": "best", **values})


def test_an_architecture_without_a_recipe_is_one_line_and_exit_code_2(tmp_path):
    result = run_script("scripts.retrain", "--image_dir", str(tmp_path), "--recipe", "best", "--architecture",
                        "inception_v3")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: --recipe best has no recipe for inception_v3; the architectures with "
                                    "one: mobilenet_1.0_224")


@pytest.fixture(scope="module")
def separable_only_at_the_cut(tmp_path_factory):
    """60 images whose red and green pool to nearly the same tiny features but differ below the top blocks."""
    root = tmp_path_factory.mktemp("recipe")
    return make_dataset(root / "images", per_class=20), tiny_blocks_model_dir(root / "models"), root


def run(data, name: str, fine_tune_learning_rate: float, steps: int):
    images, models, root = data
    out = root / name
    messages: list[str] = []
    options = RetrainOptions(
        image_dir=str(images), architecture=tiny_blocks_spec(), output_graph=str(out / "g.pb"),
        output_labels=str(out / "labels.txt"), summaries_dir=str(out / "logs"), model_dir=str(models),
        bottleneck_dir=str(root / "bn"), training=TrainingConfig(steps=100, learning_rate=0.5, seed=3),
        testing_percentage=20, validation_percentage=40, bottleneck_batch_size=8, unknown_quantile=0,
        fine_tune=FineTuneConfig(blocks=2, learning_rate=fine_tune_learning_rate, steps=steps, batch_size=16),
        recipe="best")
    run_retrain(options, log=messages.append)
    verdicts = [m for m in messages if m.startswith(("Keeping", "Reverting"))]
    assert len(verdicts) == 1
    return verdicts[0], json.loads((out / "g.json").read_text())["fine_tuned_blocks"]


def test_fine_tuning_that_pays_is_kept(separable_only_at_the_cut):
    verdict, blocks = run(separable_only_at_the_cut, "pays", 1e-2, 200)
    assert verdict.startswith("Keeping the fine-tuned model: validation accuracy 100.0% fine-tuned vs 66.7% with "
                              "the head alone (N=24; 8 images only fine-tuned right, 0 only the head")
    assert blocks == 2


def test_fine_tuning_that_cannot_pay_reverts_to_the_untouched_backbone(separable_only_at_the_cut):
    verdict, blocks = run(separable_only_at_the_cut, "hurts", 0.5, 20)  # a rate that wrecks the blocks
    assert verdict.startswith("Reverting to the head alone on the untouched backbone")
    assert "66.7% with the head alone (N=24" in verdict
    assert blocks == 0
