"""Sort a folder tree of images into one folder per label, with a retrained graph.

Every image under --image_dir (recursively; jpg, jpeg, png, bmp, gif, tif, tiff, webp) is
classified in batches and copied, moved or symlinked into
--output_dir/<label>/, or --output_dir/_uncertain/ below --min_confidence,
or --output_dir/_unknown/ when the model says it is none of the labels (its
unknown score is above its threshold; this wins over _uncertain). A CSV
report lists every image: predicted label, confidence, top 3, unknown score,
why it went where it went and, when the images already sit in class folders,
the folder's label and whether the model disagrees (a suspected mislabel). --audit prints those; --html DIR
shows them in a page that opens from disk, each with a Grad-CAM overlay.

Nothing is overwritten (taken names get "name (1).jpg") and every operation is
journalled in --output_dir/relabel_journal.jsonl: rerun the same command to
finish an interrupted run (images already sorted are skipped), or pass
--undo JOURNAL to put everything back.

    python -m scripts.relabel --graph out/retrained_graph.pb --image_dir camera_roll \\
        --output_dir sorted --mode move --audit
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from retrain.cli.common import load_gradcam, load_labeler, note_unknown, run_cli, tool_parser
from retrain.label.journal import undo
from retrain.label.relabel import (
    FAILED,
    MODES,
    PAST_TENSE,
    SORTED_EARLIER,
    UNKNOWN_FOLDER,
    UNREADABLE,
    RelabelOptions,
    check_options,
    relabel,
)


def build_parser() -> argparse.ArgumentParser:
    """relabel's flags: every option of "relabel" in ``retrain.options``, --mode limited to the library's modes."""
    return tool_parser("relabel", __doc__, choices={"mode": MODES})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.undo:
        return 1 if undo(args.undo) else 0
    if not args.graph:
        parser.error("--graph is required (unless --undo)")
    options = RelabelOptions(args.image_dir, args.output_dir, args.mode, args.min_confidence, args.batch_size,
                             args.report, args.journal)
    check_options(options)  # flag mistakes show before TensorFlow's slow start-up
    if args.html:
        from retrain.explain.html_report import check_report_folder
        check_report_folder(args.html)
    labeler = load_labeler(args)
    gradcam = load_gradcam(args, labeler) if args.html else None  # a bad --gradcam_layer fails before any move
    note_unknown(labeler)
    result = relabel(labeler, options)
    if args.audit:
        print("Suspected mislabels (most confident first): confidence, image, its folder -> the model's label")
        for verdict in result.suspected_mislabels:
            print(f"{verdict.confidence:.3f}  {verdict.source}  {verdict.current_label} -> {verdict.predicted}")
    unknown = "" if labeler.unknown_threshold is None else f"; {len(result.unknown)} none of the labels" + \
        ("" if args.mode == "report" else f" (in {UNKNOWN_FOLDER})")
    print(f"{len(result.verdicts)} images: {result.count(PAST_TENSE[args.mode])} {PAST_TENSE[args.mode]}, "
          f"{result.count(SORTED_EARLIER)} sorted earlier, {result.count(UNREADABLE)} unreadable (left in place), "
          f"{result.count(FAILED)} failed; {len(result.suspected_mislabels)} suspected mislabel(s){unknown}")
    print(f"Report: {result.report_path}")
    if result.journal_path:
        print(f"Journal: {result.journal_path} (undo with: python -m scripts.relabel --undo {result.journal_path})")
    if args.html:
        from retrain.explain.html_report import AUDIT_TEXT, audited_images, write_html_report
        page = write_html_report(args.html, labeler.labels, audited_images(result.verdicts, labeler.labels),
                                 AUDIT_TEXT, gradcam)
        print(f"HTML report: {page}")
    return 1 if result.count(FAILED) else 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
