"""Retrain the top layer of an ImageNet network to recognise your own classes.

Point --image_dir at a folder with one sub-folder of photos per class:

    flower_photos/daisy/*.jpg
    flower_photos/roses/*.jpg
    ...

Every image goes through the frozen, pretrained network once; its bottleneck
(the network's pooled features) is cached under --bottleneck_dir, so later
runs on the same images skip straight to training. Only a new softmax layer
is trained. The result is a frozen graph (input tensor 'input', output
'final_result', as TensorFlow-for-Poets made) plus a labels file, ready for
`python -m scripts.label_image`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from retrain.cli.common import run_cli, tool_parser
from retrain.job_options import retrain_options
from retrain.models.architectures import ARCHITECTURES
from retrain.pipeline import run_retrain


def build_parser() -> argparse.ArgumentParser:
    """The retrain tool's flags: every option of "retrain" in ``retrain.options``."""
    return tool_parser("retrain", __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_architectures:
        for spec in ARCHITECTURES.values():
            alias = f"  (= {spec.alias_of})" if spec.alias_of else ""
            blocks = f"{len(spec.fine_tune_cuts):2} blocks"
            print(f"{spec.name:28} {spec.input_size}x{spec.input_size}  {spec.feature_size}-d  {blocks}  "
                  f"{spec.source}{alias}")
        return 0
    run_retrain(retrain_options(vars(args)))
    return 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
