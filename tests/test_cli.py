"""The scripts: --help teaches, bad input gives one line and exit code 2."""
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT


def run_script(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT, capture_output=True, text=True,
                          timeout=timeout, env=env)


POETS_FLAGS = ["--image_dir", "--output_graph", "--output_labels", "--summaries_dir", "--how_many_training_steps",
               "--learning_rate", "--testing_percentage", "--validation_percentage", "--eval_step_interval",
               "--train_batch_size", "--test_batch_size", "--validation_batch_size",
               "--print_misclassified_test_images", "--model_dir", "--bottleneck_dir", "--final_tensor_name",
               "--architecture", "--intermediate_output_graphs_dir", "--intermediate_store_frequency",
               "--flip_left_right", "--random_crop", "--random_scale", "--random_brightness", "--tfhub_module",
               "--saved_model_dir"]


def test_retrain_help_lists_every_poets_flag():
    result = run_script("scripts.retrain", "--help")
    assert result.returncode == 0
    missing = [flag for flag in POETS_FLAGS if flag not in result.stdout]
    assert not missing


def test_label_image_help_lists_poets_flags():
    result = run_script("scripts.label_image", "--help")
    assert result.returncode == 0
    for flag in ["--graph", "--labels", "--image", "--input_layer", "--output_layer", "--input_height",
                 "--input_width", "--input_mean", "--input_std"]:
        assert flag in result.stdout


def test_list_architectures():
    result = run_script("scripts.retrain", "--list_architectures")
    assert result.returncode == 0 and "mobilenet_0.25_128_quantized" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["scripts.retrain"], "no --image_dir given"),
    (["scripts.retrain", "--image_dir", "/nonexistent/photos"], "is not a folder"),
    (["scripts.retrain", "--image_dir", ".", "--architecture", "alexnet"], "unknown --architecture 'alexnet'"),
    (["scripts.retrain", "--image_dir", ".", "--how_many_training_steps", "0"], "must be at least 1"),
    (["scripts.label_image", "--graph", "/nonexistent.pb", "--image", "x.jpg"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = run_script(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
