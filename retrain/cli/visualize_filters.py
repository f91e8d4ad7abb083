"""Show what the filters of a convolutional layer respond to: one optimised picture per filter, in a grid.

Each picture starts as faint noise and is changed, step by step, to excite
one filter as much as possible (activation maximisation), with jitter,
Lp-norm and total-variation penalties keeping it photo-like.

    python -m scripts.visualize_filters --architecture mobilenet_1.0_224 --layer Conv2d_11 --filters 0-15 \\
        --output grid.png
    python -m scripts.visualize_filters --graph out/retrained_graph.pb --output grid.png

--layer takes the registry's block names (default: the last block) or any
tensor name of the graph.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

from retrain.cli.common import run_cli, tool_parser, warn_if_trusted
from retrain.errors import UserError
from retrain.explain.filters import FilterOptions, parse_filters
from retrain.files import check_image_file


def build_parser() -> argparse.ArgumentParser:
    """visualize_filters' flags: every option of "visualize_filters" in ``retrain.options``."""
    return tool_parser("visualize_filters", __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.architecture) == bool(args.graph):
        parser.error("pass exactly one of --architecture and --graph")
    filters = parse_filters(args.filters)
    check_image_file(args.output, "output")  # before TensorFlow's slow start-up
    options = FilterOptions(**{field.name: getattr(args, field.name) for field in dataclasses.fields(FilterOptions)})
    from retrain.explain.conv_layers import resolve_layer
    from retrain.explain.filters import FilterVisualizer, save_grid
    from retrain.explain.imported_graph import ImportedGraph
    source = _backbone_source(args) if args.architecture else _graph_source(args)
    warn_if_trusted(args, source.path)
    graph = ImportedGraph(source.path, args.trust_graph)
    layer = (resolve_layer(source.blocks, args.layer)
             or graph.last_feature_map(graph.tensor(source.output, "output_layer")).name)
    visualizer = FilterVisualizer(graph, source.input_name, layer, source.height, source.width, source.mean,
                                  source.std)
    visualizer.check_filters(filters)
    print(f"Optimising {len(filters)} filter(s) of {visualizer.layer} ({options.steps} steps)")
    save_grid(visualizer.visualize(filters, options), filters, args.output, title=visualizer.layer)
    print(f"Grid: {args.output}")
    return 0


class Source(NamedTuple):
    """The graph to visualise and how to feed it."""
    path: Path
    input_name: str
    height: int
    width: int
    mean: float
    std: float
    blocks: Mapping[str, str]  # block name -> tensor
    output: str  # the last layer is found walking back from here when there are no block names


def _backbone_source(args: argparse.Namespace) -> Source:

    from retrain.models.architectures import get_architecture
    from retrain.models.downloads import ensure_model_file
    spec = get_architecture(args.architecture)
    if spec.source != "frozen_graph":
        raise UserError(f"--architecture {spec.name} is a {spec.source} model, not a frozen graph; retrain on it "
                        f"and pass the retrained graph with --graph instead")
    path = ensure_model_file(spec.url, Path(args.model_dir), spec.model_file, spec.archive_member, spec.file_hash)
    return Source(path, spec.input_tensor, spec.input_size, spec.input_size, spec.input_mean, spec.input_std,
                  spec.conv_blocks, spec.feature_tensor)


def _graph_source(args: argparse.Namespace) -> Source:
    from retrain.explain.conv_layers import graph_blocks
    from retrain.label.labeler import resolve_graph_config
    if not Path(args.graph).is_file():
        raise UserError(f"--graph {args.graph} does not exist; pass the .pb file written by retrain")
    config = resolve_graph_config(args.graph, input_layer=args.input_layer, output_layer=args.output_layer,
                                     input_height=args.input_height, input_width=args.input_width,
                                     input_mean=args.input_mean, input_std=args.input_std)
    return Source(Path(args.graph), config.input_layer, config.input_height, config.input_width, config.input_mean,
                  config.input_std, graph_blocks(args.graph), config.output_layer)


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
