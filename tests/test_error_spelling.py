"""Library errors name an option as its caller spelled it: a keyword in Python, a --flag on the command line."""
import contextlib

import pytest

from retrain.data.decode import decoded_batches
from retrain.errors import UserError, by_spelling, command_line_spelling, option_name, option_switch, option_value
from retrain.models.architectures import get_architecture
from retrain.pipeline import RetrainOptions
from retrain.training.finetune import FineTuneConfig
from retrain.training.head import TrainingConfig
from tests.hostile_files import png_bomb
from tests.test_cli import run_script

# (how to make the mistake, the option it names, the rest of the message)
BAD_VALUES = {
    "training steps": (lambda: TrainingConfig(steps=0), "how_many_training_steps", " must be at least 1, got 0"),
    "memory budget": (lambda: RetrainOptions("photos", get_architecture("mobilenet_1.0_224"), memory_budget_gb=0),
                      "memory_budget_gb", " must be positive, got 0"),
    "fine-tuned blocks": (lambda: FineTuneConfig(blocks=-1), "fine_tune_blocks", " must be 0 or more, got -1"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
@pytest.mark.parametrize("command_line", [False, True], ids=["python", "command line"])
def test_a_bad_value_names_the_option_as_the_caller_spells_it(case, command_line):
    make_mistake, option, rest = BAD_VALUES[case]
    spelling = command_line_spelling() if command_line else contextlib.nullcontext()
    with pytest.raises(UserError) as error, spelling:
        make_mistake()
    assert str(error.value) == ("--" if command_line else "") + option + rest


def spelled() -> tuple[str, ...]:
    return (option_name("learning_rate"), option_value("architecture", repr("alexnet")), option_switch("trust_graph"),
            by_spelling("flag advice", "keyword advice"))


def test_the_helpers_spell_names_values_and_switches_both_ways():
    assert spelled() == ("learning_rate", "architecture='alexnet'", "trust_graph=True", "keyword advice")
    with command_line_spelling():
        assert spelled() == ("--learning_rate", "--architecture 'alexnet'", "--trust_graph", "flag advice")
    assert option_name("learning_rate") == "learning_rate"  # the block ends, and Python spelling is back


@pytest.mark.parametrize("command_line", [False, True], ids=["python", "command line"])
def test_images_refused_on_decoding_threads_name_the_option_as_the_caller_spells_it(tmp_path, command_line):
    bomb = png_bomb(tmp_path / "bomb.png", 20000, 15000)
    spelling = command_line_spelling() if command_line else contextlib.nullcontext()
    with spelling:
        [(_, _, [(_, error)])] = list(decoded_batches([bomb], 8, 8, batch_size=1))
    assert error.endswith(f"limit; raise {'--' if command_line else ''}max_image_megapixels to read it")


def test_the_command_line_names_the_flag_in_one_error_line(tmp_path):
    result = run_script("scripts.retrain", "--image_dir", str(tmp_path), "--how_many_training_steps", "0")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --how_many_training_steps must be at least 1, got 0"]
