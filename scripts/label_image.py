"""Label images with a graph made by retrain (or by TensorFlow-for-Poets).

Prints the top labels with their scores, best first, one `label score` line
each. For graphs made by retrain, the JSON sidecar beside the graph supplies
the input size and normalisation; for Poets graphs pass them as flags (the
defaults are Poets' label_image defaults).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from retrain.errors import UserError, run_cli

if TYPE_CHECKING:
    from retrain.labeler import GraphLabeler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.label_image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_graph_arguments(parser)
    parser.add_argument("--image", required=True, nargs="+", help="Image file(s) to label.")
    parser.add_argument("--top_k", type=int, default=5, help="How many labels to print per image. (default 5)")
    return parser


def add_graph_arguments(parser: argparse.ArgumentParser, graph_required: bool = True) -> None:
    """--graph, --labels and the input overrides a Poets graph needs; shared by every script that labels."""
    parser.add_argument("--graph", required=graph_required,
                        help="Frozen graph (.pb) to use, e.g. the --output_graph of retrain.")
    parser.add_argument("--labels", default=None,
                        help="Labels file, one per line. Optional when the graph has its JSON sidecar.")
    override = parser.add_argument_group("graph input (read from the sidecar when present; Poets' defaults otherwise)")
    override.add_argument("--input_layer", default=None, help="Input tensor name. (Poets default: input)")
    override.add_argument("--output_layer", default=None, help="Output tensor name. (Poets default: final_result)")
    override.add_argument("--input_height", type=int, default=None, help="Input height. (Poets default: 224)")
    override.add_argument("--input_width", type=int, default=None, help="Input width. (Poets default: 224)")
    override.add_argument("--input_mean", type=float, default=None,
                          help="Subtracted from each pixel value. (Poets default: 128)")
    override.add_argument("--input_std", type=float, default=None,
                          help="Pixel values are divided by this after the mean. (Poets default: 128)")


def load_labeler(args: argparse.Namespace) -> GraphLabeler:
    """The GraphLabeler the flags of ``add_graph_arguments`` describe (imports TensorFlow)."""
    from retrain.labeler import GraphLabeler
    return GraphLabeler(args.graph, args.labels, input_layer=args.input_layer, output_layer=args.output_layer,
                        input_height=args.input_height, input_width=args.input_width,
                        input_mean=args.input_mean, input_std=args.input_std)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    labeler = load_labeler(args)
    paths = [Path(p) for p in args.image]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"--image {missing[0]} does not exist")
    failures = 0
    for path, probabilities, error in labeler.predict_files(paths):
        if len(paths) > 1:
            print(f"{path}:")
        if probabilities is None:
            print(f"error: cannot read image {error}", file=sys.stderr)
            failures += 1
            continue
        for index in np.argsort(-probabilities)[:args.top_k]:
            print(f"{labeler.labels[index]} {probabilities[index]:.5f}")
    return 2 if failures else 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
