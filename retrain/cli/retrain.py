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

from retrain.cli.common import given_options, run_cli, tool_parser
from retrain.job_options import retrain_options
from retrain.models.architectures import ARCHITECTURES, PUBLISHED_TOP1_SOURCE, ArchitectureSpec
from retrain.pipeline import run_retrain


def build_parser() -> argparse.ArgumentParser:
    """The retrain tool's flags: every option of "retrain" in ``retrain.options``."""
    return tool_parser("retrain", __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    given = given_options(build_parser(), argv)  # only the flags typed: they win over a --recipe
    if given.get("list_architectures"):
        print(f"{'architecture':28} {'input':>7}  {'features':>8}  {'blocks':>6}  {'top-1':>5}  {'params':>6}  "
              f"{'mult-adds':>9}  {'CPU/image':>9}  source")
        for spec in ARCHITECTURES.values():
            print(architecture_line(spec))
        print(f"top-1: published ImageNet accuracy ({PUBLISHED_TOP1_SOURCE}); params (without the ImageNet "
              f"classifier), mult-adds and CPU/image (2 shared cores): python -m benchmarks.backbone_cost")
        return 0
    run_retrain(retrain_options(given))
    return 0


def architecture_line(spec: ArchitectureSpec) -> str:
    """One --list_architectures line: the row's sizes and, where known, the facts that help choose it."""
    alias = f"  (= {spec.alias_of})" if spec.alias_of else ""
    top1 = f"{spec.imagenet_top1:4.1f}%" if spec.imagenet_top1 else "-"
    parameters = f"{spec.parameters_m:5.1f}M" if spec.parameters_m else "-"
    multiply_adds = f"{spec.multiply_adds_g:6.2f}G" if spec.multiply_adds_g else "-"
    cost = f"{spec.cpu_ms:6.0f} ms" if spec.cpu_ms else "-"
    return (f"{spec.name:28} {spec.input_size:3}x{spec.input_size:<3}  {spec.feature_size:6}-d  "
            f"{len(spec.fine_tune_cuts):6}  {top1:>5}  {parameters:>6}  {multiply_adds:>9}  {cost:>9}  "
            f"{spec.source}{alias}")


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
