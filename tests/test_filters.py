"""Filter visualisation climbs the filter's activation, and total variation smooths what it draws."""
import re

import numpy as np
import pytest
from PIL import Image

from retrain.cli import visualize_filters
from retrain.errors import UserError, command_line_spelling
from retrain.explain.filters import FilterOptions, FilterVisualizer, parse_filters, save_grid, total_variation
from retrain.explain.imported_graph import ImportedGraph
from retrain.files import DEFAULT_MODEL_DIR
from retrain.models.architectures import get_architecture
from tests.conftest import TINY_FEATURES, TINY_SIZE
from tests.hostile_files import graph_writing_file
from tests.test_cli import run_script
from tests.test_gradcam import downsampling_graph_def
from tests.test_relabel import tiny_graph  # noqa: F401 (module-scoped fixture)

FILTERS = list(range(TINY_FEATURES))


def backbone_graph(folder):
    graph = folder / "backbone.pb"
    graph.write_bytes(downsampling_graph_def().SerializeToString())
    return graph


@pytest.fixture(scope="module")
def visualizer(tmp_path_factory) -> FilterVisualizer:
    graph = ImportedGraph(backbone_graph(tmp_path_factory.mktemp("filters")))
    return FilterVisualizer(graph, "input", "Relu", TINY_SIZE, TINY_SIZE, 127.5, 127.5)


def test_the_optimised_image_raises_the_filter_activation_tenfold(visualizer):
    start = visualizer.start_images(len(FILTERS), seed=1)
    result = visualizer.visualize(FILTERS, FilterOptions(steps=40), start)
    before, after = visualizer.mean_activations(start, FILTERS), visualizer.mean_activations(result, FILTERS)
    print(f"activation gain per filter: {np.round(after / np.maximum(before, 1e-9), 1)}")
    assert (after > 0).all() and (after >= 10 * before).all(), (before, after)
    # Each image excites its own filter more than the other images do: the pictures are filter-specific.
    others = np.stack([visualizer.mean_activations(np.roll(result, k, axis=0), FILTERS) for k in range(1, 4)])
    assert (after > others.max(axis=0)).mean() >= 0.75


def test_total_variation_regularisation_smooths_the_image(visualizer):
    start = visualizer.start_images(4, seed=2)
    smooth = visualizer.visualize(FILTERS[:4], FilterOptions(steps=30, tv_weight=0.5), start)
    rough = visualizer.visualize(FILTERS[:4], FilterOptions(steps=30, tv_weight=0.0), start)
    print(f"total variation with TV {total_variation(smooth).round(1)}, without {total_variation(rough).round(1)}")
    assert (total_variation(smooth) < total_variation(rough)).all()


def test_octaves_and_lp_norm_keep_the_size_and_the_pixel_range(visualizer):
    loud = visualizer.visualize([0, 1], FilterOptions(steps=20, octaves=2, lp_weight=0.0))
    quiet = visualizer.visualize([0, 1], FilterOptions(steps=20, octaves=2, lp_weight=1.0))
    assert loud.shape == (2, TINY_SIZE, TINY_SIZE, 3) and loud.dtype == np.uint8
    assert np.abs(quiet.astype(float) - 127.5).mean() < np.abs(loud.astype(float) - 127.5).mean()


def test_bad_filters_layers_and_outputs_are_refused(visualizer, tmp_path):
    assert parse_filters("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(UserError, match="range like 0-15"):
        parse_filters("all")
    with pytest.raises(UserError, match=f"has filters 0-{TINY_FEATURES - 1}"):
        visualizer.visualize([0, TINY_FEATURES])
    with pytest.raises(UserError, match="^layer=Nope:0 is not a tensor of"):
        FilterVisualizer(ImportedGraph(backbone_graph(tmp_path)), "input", "Nope", TINY_SIZE, TINY_SIZE, 127.5, 127.5)
    with pytest.raises(UserError, match=".png or .jpg"):
        save_grid(np.zeros((1, 4, 4, 3), np.uint8), [0], tmp_path / "grid.gif")


def test_the_grid_has_one_captioned_tile_per_filter(tmp_path):
    tiles = np.full((5, 20, 30, 3), 200, np.uint8)
    save_grid(tiles, [3, 4, 5, 6, 7], tmp_path / "grid.png", title="layer X")
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width == 3 * 34 + 4 and grid.height > 2 * (20 + 14)


def test_the_script_draws_a_grid_for_a_retrained_graph(tiny_graph, tmp_path):  # noqa: F811
    output = tmp_path / "grid.png"
    assert visualize_filters.main(["--graph", str(tiny_graph), "--filters", "0-2", "--steps", "5", "--octaves", "2",
                                   "--output", str(output)]) == 0
    with Image.open(output) as grid:
        assert grid.format == "PNG" and grid.width > 2 * TINY_SIZE


def test_bad_input_gives_one_line_and_exit_code_2():
    result = run_script("scripts.visualize_filters", "--architecture", "mobilenet_1.0_224", "--layer", "Conv2d_99")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: --layer 'Conv2d_99' is not a block of this backbone (blocks: Conv2d_0, ")


@pytest.mark.parametrize("flags, message", [
    (["--filters", "1020-1030"], "--filters 1024: layer MobilenetV1/MobilenetV1/Conv2d_13_pointwise/Relu6:0 "
                                 "has filters 0-1023"),
    (["--output", "/proc/grid.png"], "--output: cannot write in /proc"),
    (["--architecture", "inception_v3"], "inception_v3 is a keras model, not a frozen graph"),
])
def test_bad_flags_are_refused(flags, message):
    with pytest.raises(UserError, match=re.escape(message)), command_line_spelling():
        visualize_filters.main(["--architecture", "mobilenet_1.0_224", *flags])


def test_the_registry_blocks_are_tensors_of_the_bundled_mobilenet():
    spec = get_architecture("mobilenet_1.0_224")
    graph = ImportedGraph(DEFAULT_MODEL_DIR / spec.model_file)
    shapes = [graph.tensor(tensor).shape.as_list() for tensor in spec.conv_blocks.values()]
    assert len(shapes) == 14 and all(len(shape) == 4 for shape in shapes)
    assert shapes[-1] == [None, 7, 7, 1024]  # the last block: the one Grad-CAM explains


def test_a_graph_that_does_more_than_compute_is_not_visualised(tmp_path):
    evil = tmp_path / "evil.pb"
    evil.write_bytes(graph_writing_file(tmp_path / "written").SerializeToString())
    with pytest.raises(UserError, match=r"evil\.pb contains op WriteFile \(node SideEffect\).*--trust_graph"), \
            command_line_spelling():
        visualize_filters.main(["--graph", str(evil), "--layer", "input", "--output", str(tmp_path / "grid.png")])
    assert not (tmp_path / "written").exists()
