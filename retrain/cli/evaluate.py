"""Score a retrained graph on a folder of labelled images.

--image_dir has the layout retrain reads: one sub-folder of images per class,
named after the class. Prints accuracy, macro and per-class precision, recall,
F1 and support, and the confusion matrix; --plot saves the confusion matrix
and per-class bars as an image; --html writes a report that opens from disk,
where clicking a confusion-matrix cell shows its images, each misclassified
one with a Grad-CAM overlay. --unknown_dir DIR (images of none of the labels)
adds the AUROC of the model's unknown score between --image_dir and DIR and
the share of each side flagged as none of the labels. Works with graphs made
by TensorFlow-for-Poets too (pass --labels and the input flags).

    python -m scripts.evaluate --graph out/retrained_graph.pb --image_dir held_out_photos --plot report.png
    python -m scripts.evaluate --graph out/retrained_graph.pb --image_dir held_out_photos --html report/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from retrain.cli.common import load_gradcam, load_labeler, note_unknown, run_cli, tool_parser

if TYPE_CHECKING:
    from retrain.label.evaluation import Evaluation
    from retrain.label.labeler import GraphLabeler


def build_parser() -> argparse.ArgumentParser:
    """evaluate's flags: every option of "evaluate" in ``retrain.options``."""
    return tool_parser("evaluate", __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.html:
        from retrain.explain.html_report import check_report_folder
        check_report_folder(args.html)  # before TensorFlow's slow start-up
    from retrain.label.evaluation import check_unknown_dir, evaluate_folder, plot_report
    from retrain.metrics import expected_calibration_error
    labeler = load_labeler(args)
    gradcam = load_gradcam(args, labeler) if args.html else None  # a bad --gradcam_layer fails before the work
    unknown_paths = check_unknown_dir(labeler, args.unknown_dir) if args.unknown_dir else None
    if unknown_paths is None:
        note_unknown(labeler)
    evaluation = evaluate_folder(labeler, args.image_dir, args.batch_size)
    for path, error in evaluation.unreadable:
        print(f"warning: skipped unreadable image {error}", file=sys.stderr)
    report = evaluation.report
    print(f"Accuracy = {report.accuracy * 100:.1f}% (N={report.count}), macro precision = "
          f"{report.macro_precision:.3f}, macro recall = {report.macro_recall:.3f}, macro F1 = {report.macro_f1:.3f}")
    print(report.to_text())
    print(f"ECE = {expected_calibration_error(evaluation.probabilities, evaluation.truths):.3f}")
    if unknown_paths is not None:
        print_unknown_separation(labeler, evaluation, unknown_paths, args.batch_size)
    if args.plot:
        plot_report(report, args.plot)
        print(f"Plot: {args.plot}")
    if args.html:
        from retrain.explain.html_report import ReportText, scored_images, write_html_report
        scored = scored_images(evaluation.paths, evaluation.truths, evaluation.probabilities)
        page = write_html_report(args.html, labeler.labels, scored, ReportText(f"Evaluation on {args.image_dir}"),
                                 gradcam)
        print(f"HTML report: {page}")
    return 0


def print_unknown_separation(labeler: GraphLabeler, evaluation: Evaluation, unknown_paths: list[Path],
                             batch_size: int) -> None:
    """--unknown_dir's lines: the unknown score's AUROC, then the share of each side flagged, one line each."""
    from retrain.label.evaluation import unknown_separation
    separation = unknown_separation(labeler, evaluation, unknown_paths, batch_size)
    for _, error in separation.unreadable:
        print(f"warning: skipped unreadable image {error}", file=sys.stderr)
    print(f"Unknown score AUROC = {separation.auroc:.3f} (--image_dir's {separation.known_count} images vs "
          f"--unknown_dir's {separation.unknown_count})")
    for side, flagged, count in (("--image_dir", separation.known_flagged, separation.known_count),
                                 ("--unknown_dir", separation.unknown_flagged, separation.unknown_count)):
        print(f"Flagged none of the labels: {flagged / count:.1%} of {side}'s images ({flagged} of {count}, unknown "
              f"score > {labeler.unknown_threshold:.4g})")


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
