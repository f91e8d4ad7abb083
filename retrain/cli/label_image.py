"""Label images with a graph made by retrain (or by TensorFlow-for-Poets).

Prints the top labels with their scores, best first, one `label score` line
each, then `none of the labels (unknown score S, threshold T)` when the image
is far from every class the model was trained on (models retrain exported
with an unknown score). For graphs made by retrain, the JSON sidecar beside the graph supplies
the input size and normalisation; for Poets graphs pass them as flags (the
defaults are Poets' label_image defaults). --gradcam writes the photo with a
Grad-CAM heatmap of the top label (or --gradcam_label) blended over it: red
where the evidence for that label was.

    python -m scripts.label_image --graph out/retrained_graph.pb --image photo.jpg --gradcam heat.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from retrain.cli.common import load_gradcam, load_labeler, note_unknown, run_cli, tool_parser
from retrain.errors import UserError
from retrain.files import check_image_file


def build_parser() -> argparse.ArgumentParser:
    """label_image's flags: every option of "label_image" in ``retrain.options``."""
    return tool_parser("label_image", __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = [Path(p) for p in args.image]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"--image {missing[0]} does not exist")
    if args.gradcam:
        if len(paths) != 1:
            raise UserError(f"--gradcam explains one image, got {len(paths)}; pass a single --image")
        check_image_file(args.gradcam, "gradcam")  # before TensorFlow's slow start-up
    labeler = load_labeler(args)
    if args.gradcam_label is not None and args.gradcam_label not in labeler.labels:
        raise UserError(f"--gradcam_label {args.gradcam_label!r} is not in the labels file "
                        f"(labels: {', '.join(labeler.labels)})")
    gradcam = load_gradcam(args, labeler) if args.gradcam else None  # a bad --gradcam_layer fails before any output
    note_unknown(labeler)
    failures = 0
    for path, probabilities, unknown_score, error in labeler.label_files(paths):
        if len(paths) > 1:
            print(f"{path}:")
        if probabilities is None:
            print(f"error: cannot read image {error}", file=sys.stderr)
            failures += 1
            continue
        for label, probability in labeler.top_labels(probabilities, args.top_k):
            print(f"{label} {probability:.5f}")
        if labeler.is_unknown(unknown_score):
            print(f"none of the labels (unknown score {unknown_score:.4g}, threshold {labeler.unknown_threshold:.4g})")
        if gradcam:
            from retrain.explain.gradcam import write_explanation
            label = args.gradcam_label or labeler.top_labels(probabilities, 1)[0][0]
            write_explanation(gradcam, path, labeler.labels.index(label), args.gradcam)
            print(f"Grad-CAM for {label}: {args.gradcam}")
    return 2 if failures else 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
