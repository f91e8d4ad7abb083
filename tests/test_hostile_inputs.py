"""Hostile inputs end to end: decompression bombs in a photo folder, a graph that writes a file."""
import os
import subprocess
import sys

import pytest

from retrain.cli import evaluate as evaluate_script
from retrain.cli import label_image as label_image_script
from retrain.cli import relabel as relabel_script
from retrain.errors import UserError
from retrain.pipeline import run_retrain
from tests.conftest import PROJECT, TINY_SIZE, make_dataset, tiny_retrain_options
from tests.hostile_files import gif_bomb, graph_writing_file, png_bomb, tiff_bomb

SIZE_FLAGS = ["--input_height", str(TINY_SIZE), "--input_width", str(TINY_SIZE)]
BOMBS = {"bomb.png": png_bomb, "bomb.tif": tiff_bomb, "bomb.gif": gif_bomb}


def plant_bombs(folder, width=20000, height=15000):
    """One bomb of each kind in ``folder``; 300 megapixels each, 0.9 GB or more once decoded."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write(folder / name, width, height) for name, write in BOMBS.items()]


def test_retrain_skips_bombs_with_one_line_each_saying_how_to_raise_the_limit(tmp_path, tiny_model_dir):
    image_dir = make_dataset(tmp_path / "images", per_class=6)
    bombs = plant_bombs(image_dir / "red")
    messages = []
    run_retrain(tiny_retrain_options(image_dir, tiny_model_dir, tmp_path, steps=5), log=messages.append)
    for bomb in bombs:
        [line] = [m for m in messages if str(bomb) in m]
        assert line == (f"warning: skipping unreadable image {bomb}: 20000x15000 pixels (300 megapixels) is over "
                        f"the 40 megapixel limit; raise max_image_megapixels to read it")
    assert (tmp_path / "out" / "g.pb").is_file()


def test_the_budget_holds_per_decoding_thread(tmp_path):
    """Eight bombs decoded ahead on two threads, with 200 MB of address space to spare: all refused, none decoded."""
    bombs = plant_bombs(tmp_path / "a") + plant_bombs(tmp_path / "b") + plant_bombs(tmp_path / "c")[:2]
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from retrain.data.decode import decoded_batches\n"
        "paths = [Path(p) for p in sys.argv[1:]]\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 2**20, resource.RLIM_INFINITY))\n"
        "for good, batch, bad in decoded_batches(paths, 224, 224, batch_size=4):\n"
        "    print(len(good), *(error.split(': ', 1)[1] for _, error in bad), sep='\\n')\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script, *map(str, bombs)], cwd=PROJECT, capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.count("0") == 2 and sum("is over the 40 megapixel limit" in line for line in lines) == len(bombs)


@pytest.fixture
def graph_writing_a_file(tmp_path):
    """(graph, labels file, the file the graph would write)."""
    target = tmp_path / "written.txt"
    graph = tmp_path / "evil.pb"
    graph.write_bytes(graph_writing_file(target, TINY_SIZE, 3).SerializeToString())
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    return graph, tmp_path / "labels.txt", target


def test_label_image_refuses_it_with_one_line_and_exit_code_2(graph_writing_a_file, image_dir):
    graph, labels, target = graph_writing_a_file
    photo = next((image_dir / "red").iterdir())
    result = subprocess.run([sys.executable, "-m", "scripts.label_image", "--graph", str(graph), "--labels",
                             str(labels), *SIZE_FLAGS, "--image", str(photo)], cwd=PROJECT, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {graph} contains op WriteFile (node SideEffect), which does more than compute (files, Python, "
        f"I/O); refusing to run it. If you trust where it came from, pass --trust_graph"]
    assert not target.exists()


@pytest.mark.parametrize("script", [relabel_script, evaluate_script], ids=["relabel", "evaluate"])
def test_relabel_and_evaluate_refuse_it(script, graph_writing_a_file, image_dir, tmp_path):
    graph, labels, target = graph_writing_a_file
    extra = ["--output_dir", str(tmp_path / "sorted")] if script is relabel_script else []
    with pytest.raises(UserError, match=r"contains op WriteFile \(node SideEffect\)"):
        script.main(["--graph", str(graph), "--labels", str(labels), *SIZE_FLAGS, "--image_dir", str(image_dir),
                     *extra])
    assert not target.exists()


def test_trust_graph_runs_it_and_says_so(graph_writing_a_file, image_dir, capsys):
    graph, labels, target = graph_writing_a_file
    photo = next((image_dir / "red").iterdir())
    assert label_image_script.main(["--graph", str(graph), "--labels", str(labels), *SIZE_FLAGS,
                                    "--image", str(photo), "--trust_graph"]) == 0
    assert target.read_text() == "written by the graph"
    assert "--trust_graph" in capsys.readouterr().err
