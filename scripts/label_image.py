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
from typing import Sequence

from retrain.errors import UserError
from scripts._cli import add_graph_arguments, load_labeler, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.label_image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_graph_arguments(parser)
    parser.add_argument("--image", required=True, nargs="+", help="Image file(s) to label.")
    parser.add_argument("--top_k", type=int, default=5, help="How many labels to print per image. (default 5)")
    return parser


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
        for label, probability in labeler.top_labels(probabilities, args.top_k):
            print(f"{label} {probability:.5f}")
    return 2 if failures else 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
