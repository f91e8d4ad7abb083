"""Every option is declared once, in retrain.options: argparse, the docs and the library's defaults agree with it."""
import argparse
import dataclasses
import importlib

import pytest

from retrain.data.distortions import Distortions
from retrain.errors import UserError
from retrain.explain.filters import FilterOptions
from retrain.export.deploy import ExportRequest
from retrain.label.relabel import RelabelOptions
from retrain.options import TOOLS, default, find, options_of
from retrain.options.docs import FLAGS_PAGE, README, REGENERATE, flags_page, readme_with_table
from retrain.pipeline import RetrainOptions, retrain_options
from retrain.training.finetune import FineTuneConfig
from retrain.training.head import TrainingConfig


def parser_of(tool: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"retrain.cli.{tool}").build_parser()


def actions_of(tool: str) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser_of(tool)._actions if action.dest != "help"}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tools_parser_is_the_table(tool):
    actions = actions_of(tool)
    assert list(actions) == [option.name for option in options_of(tool)]  # the same flags, in the table's order
    for option in options_of(tool):
        action = actions[option.name]
        required = tool in option.required
        assert action.required == required, option.name
        assert action.default == (None if required else option.default), option.name
        assert action.help.startswith(option.help), option.name
        assert isinstance(action, argparse._StoreTrueAction) == option.switch, option.name
        if not option.switch:
            assert action.type is option.value_type, option.name


def test_architecture_help_lists_the_registry():
    from retrain.models.architectures import ARCHITECTURES
    help_text = actions_of("retrain")["architecture"].help
    # a quantized twin is folded into its float row: mobilenet_1.0_224[_quantized]
    assert all(name.removesuffix("_quantized") in help_text for name in ARCHITECTURES)
    assert "mobilenet_0.25_128[_quantized]" in help_text


def test_the_flags_docs_are_fresh():
    stale = f"stale; regenerate with: {REGENERATE}"
    assert FLAGS_PAGE.read_text(encoding="utf-8") == flags_page(), f"{FLAGS_PAGE.name} is {stale}"
    readme = README.read_text(encoding="utf-8")
    assert readme == readme_with_table(readme), f"README.md's flags table is {stale}"


def field_defaults(options_class: type) -> dict:
    return {field.name: field.default for field in dataclasses.fields(options_class)
            if field.default is not dataclasses.MISSING}


def test_the_retrain_dataclasses_take_their_defaults_from_the_table():
    classes = {"": RetrainOptions, "training": TrainingConfig, "fine_tune": FineTuneConfig, "distortions": Distortions}
    checked = 0
    for option in options_of("retrain"):
        if option.field_path and option.name != "image_dir":  # the one field without a default: a run needs images
            parent, _, leaf = option.field_path.rpartition(".")
            assert field_defaults(classes[parent])[leaf] == option.default, option.name
            checked += 1
    # every defaulted field has an option: none is written only in the library (recipe_line is what
    # retrain_options computes from --recipe, for the run to print)
    computed = {"recipe_line"}
    assert checked == sum(len(set(field_defaults(options_class)) - computed) for options_class in classes.values())


@pytest.mark.parametrize("options_class, tool, names", [
    (RelabelOptions, "relabel", {"output_dir": "output_dir", "mode": "mode", "min_confidence": "min_confidence",
                                 "batch_size": "batch_size", "report_path": "report", "journal_path": "journal"}),
    (FilterOptions, "visualize_filters", {field.name: field.name for field in dataclasses.fields(FilterOptions)}),
    (ExportRequest, "export", {name: name for name in ("output_labels", "image_dir", "quantize", "quantize_samples",
                                                       "tflite_io", "export_check_samples", "trust_graph",
                                                       "max_image_megapixels")}),
])
def test_the_other_tools_dataclasses_agree_with_the_table(options_class, tool, names):
    defaults = field_defaults(options_class)
    assert {field: defaults[field] for field in names} == {field: default(name, tool) for field, name in names.items()}


def test_the_extract_job_agrees_with_the_table():
    beam_extract = pytest.importorskip("retrain.scale.beam_extract")
    defaults = field_defaults(beam_extract.ExtractJob)
    for name in ("model_dir", "bottleneck_dir", "bottleneck_batch_size", "max_image_megapixels", "trust_graph"):
        assert defaults[name] == default(name), name


def test_retrain_options_with_no_option_is_the_cli_with_no_flag():
    args = parser_of("retrain").parse_args(["--image_dir", "photos"])
    cli = retrain_options(vars(args))
    assert retrain_options({"image_dir": "photos"}) == cli
    assert cli.training.steps == default("how_many_training_steps") and cli.architecture.name == default(
        "architecture", "retrain")


def test_retrain_options_fill_the_nested_options():
    options = retrain_options({"image_dir": "photos", "how_many_training_steps": 7, "random_seed": 3,
                               "fine_tune_blocks": 2, "flip_left_right": True, "testing_percentage": 5})
    assert (options.training.steps, options.training.seed, options.fine_tune.blocks) == (7, 3, 2)
    assert options.distortions.flip_left_right and options.testing_percentage == 5.0


def test_an_unknown_keyword_is_a_user_error_with_the_closest_name():
    with pytest.raises(UserError, match="unknown option 'how_many_training_step'; did you mean "
                                        "'how_many_training_steps'"):
        retrain_options({"image_dir": "photos", "how_many_training_step": 10})


@pytest.mark.parametrize("name, value", [("how_many_training_steps", "500"), ("how_many_training_steps", 1.5),
                                         ("learning_rate", "fast"), ("trust_graph", "yes"), ("output_graph", 3),
                                         ("hidden_units", True)])
def test_a_value_of_the_wrong_type_is_a_user_error_naming_the_keyword(name, value):
    with pytest.raises(UserError, match=f"^{name} takes"):
        retrain_options({"image_dir": "photos", name: value})


def test_a_name_two_tools_mean_apart_needs_the_tool():
    assert default("learning_rate", "retrain") != default("learning_rate", "visualize_filters")
    with pytest.raises(KeyError):
        find("learning_rate")
