"""Sort a folder tree of images into one folder per predicted label, safely.

Users point this at a camera roll, a scraped dump or an existing labelled
dataset. Three promises shape the code:

* **Nothing is lost or overwritten**: files are placed only through
  ``placement.py`` (a taken name gets ``name (1).jpg``).
* **Every file operation is journalled** (``journal.py``), so a rerun after a
  crash finishes what was interrupted and ``--undo`` reverses everything.
* **A rerun is a no-op for what is already sorted.** Sources recorded as done
  (same path, same content hash) are skipped, and files the journal put in the
  output are never taken as new input.

Every image gets a ``Verdict``: one row of the CSV report. Where it goes:
``_unknown/`` when the model says it is none of the labels (its unknown score
is above the sidecar's threshold), else ``_uncertain/`` below
``--min_confidence``, else its label's folder. ``_unknown`` wins when both
hold: such an image is not a close call between labels, and whoever reviews
``_uncertain`` picks among the labels.
"""
from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import numpy as np

from ..data.images import iter_image_files, label_for_folder
from ..errors import Log, UserError, option_name, option_value
from ..files import atomic_write, content_key
from ..options import default
from ..progress import progress_bar
from .journal import JOURNAL_NAME, Journal
from .labeler import REPORT_TOP_K, GraphLabeler
from .placement import candidate_names, folder_for_label, holds_content, place_file

MODES = ("copy", "move", "symlink", "report")
PAST_TENSE = {"copy": "copied", "move": "moved", "symlink": "linked", "report": "predicted"}
SORTED_EARLIER = "sorted earlier"
UNREADABLE = "unreadable"
FAILED = "failed"
UNCERTAIN_FOLDER = "_uncertain"
UNKNOWN_FOLDER = "_unknown"
REPORT_NAME = "relabel_report.csv"
REPORT_COLUMNS = ["source", "status", "predicted_label", "confidence", "top3", "current_label", "disagrees",
                  "unknown_score", "reason", "destination", "error"]


@dataclass
class Verdict:
    """What relabel found and did for one image: one row of the CSV report."""
    source: Path
    status: str
    top: list[tuple[str, float]] = field(default_factory=list)  # best first
    current_label: str | None = None  # the class folder it sits in, if that is one of the graph's labels
    destination: Path | None = None
    error: str = ""
    unknown_score: float | None = None  # None: unreadable, or the model has no unknown score
    unknown: bool = False  # none of the labels: the unknown score is above the model's threshold
    reason: str = ""  # why it goes where it goes (label folder, _uncertain or _unknown)

    @property
    def predicted(self) -> str:
        return self.top[0][0] if self.top else ""

    @property
    def confidence(self) -> float:
        return self.top[0][1] if self.top else 0.0

    @property
    def disagrees(self) -> bool:
        """A suspected mislabel: the image's folder says one class, the model another."""
        return bool(self.current_label and self.top and self.current_label != self.predicted)

    def row(self) -> list[str]:
        return [str(self.source), self.status, self.predicted, report_probability(self.confidence) if self.top else "",
                "; ".join(f"{label} {report_probability(p)}" for label, p in self.top), self.current_label or "",
                "yes" if self.disagrees else ("no" if self.current_label and self.top else ""),
                "" if self.unknown_score is None else f"{self.unknown_score:.6g}", self.reason,
                str(self.destination or ""), self.error]


def report_probability(probability: float) -> str:
    """Four decimals, rounded down: a confidence just under --min_confidence (0.49996) must not read as
    reaching it (0.5000) beside an image that was put in _uncertain for falling short.

    Cut from the float32's shortest decimal form, so that 0.29 reads 0.2900, not 0.2899 (its binary value).
    """
    shortest = np.format_float_positional(np.float32(probability))
    return str(Decimal(shortest).quantize(Decimal("0.0001"), rounding=ROUND_DOWN))


@dataclass
class RelabelOptions:
    """One relabel run; the CLI flags map onto these one to one."""
    image_dir: str
    output_dir: str | None = None
    mode: str = default("mode")
    min_confidence: float = default("min_confidence")
    batch_size: int = default("batch_size")
    report_path: str | None = None  # default: <output_dir>/relabel_report.csv
    journal_path: str | None = None  # default: <output_dir>/relabel_journal.jsonl


@dataclass
class RelabelResult:
    verdicts: list[Verdict]  # in report order: most confident disagreements first
    report_path: Path
    journal_path: Path | None

    @property
    def suspected_mislabels(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.disagrees]

    @property
    def unknown(self) -> list[Verdict]:
        """The images the model says are none of the labels (in ``_unknown``, unless mode report)."""
        return [v for v in self.verdicts if v.unknown]

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _current_label(path: Path, image_dir: Path, labels_by_folder: dict[str, str]) -> str | None:
    """The graph label named by the top-level folder the image sits in, if any."""
    parts = path.relative_to(image_dir).parts
    return labels_by_folder.get(label_for_folder(parts[0])) if len(parts) > 1 else None


def check_options(options: RelabelOptions) -> tuple[Path, Path | None, Path]:
    """(image_dir, output_dir, report path), resolved and checked."""
    if options.mode not in MODES:
        raise UserError(f"{option_name('mode')} must be one of {', '.join(MODES)}, got {options.mode!r}")
    if not options.image_dir:
        raise UserError(f"no {option_name('image_dir')} given; point it at the folder of images to sort")
    image_dir = Path(options.image_dir).resolve()
    if not image_dir.is_dir():
        raise UserError(f"{option_value('image_dir', options.image_dir)} is not a folder; point it at the folder of "
                        f"images to sort")
    if not 0.0 <= options.min_confidence <= 1.0:
        raise UserError(f"{option_name('min_confidence')} must be from 0 to 1, got {options.min_confidence}")
    if options.batch_size < 1:
        raise UserError(f"{option_name('batch_size')} must be at least 1, got {options.batch_size}")
    output_dir = Path(options.output_dir).resolve() if options.output_dir else None
    if output_dir is None and options.mode != "report":
        raise UserError(f"{option_value('mode', repr(options.mode))} needs {option_name('output_dir')}: where the "
                        f"class folders go")
    if output_dir is not None and _inside(image_dir, output_dir):
        raise UserError(f"{option_value('image_dir', options.image_dir)} is inside "
                        f"{option_value('output_dir', options.output_dir)}; "
                        f"choose an output folder outside the images")
    if options.report_path:
        report_path = Path(options.report_path)
    elif output_dir is not None:
        report_path = output_dir / REPORT_NAME
    else:
        raise UserError(f"{option_value('mode', repr('report'))} needs {option_value('report', 'FILE.csv')} (or "
                        f"{option_name('output_dir')} to put it in)")
    return image_dir, output_dir, report_path


def relabel(labeler: GraphLabeler, options: RelabelOptions, log: Log = print) -> RelabelResult:
    """Classify every image under ``image_dir`` and sort it into ``output_dir/<label>/``."""
    image_dir, output_dir, report_path = check_options(options)
    journal = None
    if options.mode != "report":
        journal = Journal(Path(options.journal_path) if options.journal_path else output_dir / JOURNAL_NAME)
    with journal or contextlib.nullcontext():
        earlier = journal.resume(log) if journal else []
        verdicts = _classify_and_sort(labeler, options, image_dir, output_dir, journal, earlier, log)
    verdicts.sort(key=lambda v: (not v.disagrees, v.status == UNREADABLE, -v.confidence, str(v.source)))
    write_report(verdicts, report_path)
    return RelabelResult(verdicts, report_path, journal.path if journal else None)


def _classify_and_sort(labeler: GraphLabeler, options: RelabelOptions, image_dir: Path, output_dir: Path | None,
                       journal: Journal | None, earlier: list[dict], log: Log) -> list[Verdict]:
    made_by_us = {Path(entry["destination"]) for entry in earlier}
    sorted_before = {Path(e["source"]): e for e in earlier if os.path.lexists(e["destination"])}
    verdicts = [Verdict(source, SORTED_EARLIER, [tuple(t) for t in e["top"]], e["current_label"],
                        Path(e["destination"]), unknown_score=e.get("unknown_score"),
                        unknown=e.get("unknown", False), reason=e.get("reason", ""))
                for source, e in sorted_before.items() if _inside(source, image_dir)]
    todo = []
    for path in iter_image_files(image_dir):
        if (output_dir is not None and _inside(path, output_dir)) or path in made_by_us:
            continue
        entry = sorted_before.get(path)
        if entry is not None and holds_content(path, entry["sha1"]):
            continue  # sorted by an earlier run and unchanged since
        todo.append(path)
    skipped = len(verdicts)
    if skipped:
        log(f"{skipped} image(s) were sorted by an earlier run into {output_dir}; skipping them")
    labels_by_folder = {label_for_folder(label): label for label in labeler.labels}
    answers = labeler.label_files(todo, options.batch_size)
    for path, probabilities, unknown_score, error in progress_bar(answers, total=len(todo), desc="Relabelling",
                                                                  unit="img"):
        verdict = Verdict(path, UNREADABLE, current_label=_current_label(path, image_dir, labels_by_folder),
                          error=error or "")
        if error is not None:
            log(f"warning: skipping unreadable image {error}")  # left in place, listed in the report
        if probabilities is not None:
            verdict.top = labeler.top_labels(probabilities, REPORT_TOP_K)
            verdict.status = PAST_TENSE[options.mode]
            verdict.unknown_score, verdict.unknown = unknown_score, bool(labeler.is_unknown(unknown_score))
            folder, verdict.reason = _destination_folder(verdict, options.min_confidence, labeler.unknown_threshold)
            if journal is not None:
                _sort_one(journal, options.mode, verdict, output_dir / folder)
        verdicts.append(verdict)
    if not labeler.batched:
        log("note: this graph has batch size 1 baked in past its input, so images went through it one at a time")
    return verdicts


def _destination_folder(verdict: Verdict, min_confidence: float, threshold: float | None) -> tuple[str, str]:
    """(the output folder an image goes to, why): ``_unknown`` first, then ``_uncertain``, then its label's."""
    low = verdict.confidence < min_confidence
    confidence = f"confidence {report_probability(verdict.confidence)} < {option_name('min_confidence')} " \
                  f"{min_confidence}"
    if verdict.unknown:
        reason = f"none of the labels: unknown score {verdict.unknown_score:.4g} > threshold {threshold:.4g}"
        return UNKNOWN_FOLDER, reason + (f" (also {confidence})" if low else "")
    if low:
        return UNCERTAIN_FOLDER, confidence
    return folder_for_label(verdict.predicted), "top label"


def _sort_one(journal: Journal, mode: str, verdict: Verdict, folder: Path) -> None:
    """Place one image under the first free name in ``folder``, journalled; sets its destination or error."""
    try:
        sha1 = content_key(verdict.source)
    except OSError as error:
        verdict.status, verdict.error = FAILED, f"cannot read: {error.strerror}"
        return
    for destination in candidate_names(folder, verdict.source.name):
        if os.path.lexists(destination):
            continue
        entry = journal.plan(mode, verdict.source, destination, sha1, verdict.top, verdict.current_label,
                             {"unknown_score": verdict.unknown_score, "unknown": verdict.unknown,
                              "reason": verdict.reason})
        try:
            place_file(verdict.source, destination, mode)
        except FileExistsError:
            journal.mark(entry, "failed", "name taken meanwhile")
            continue  # another program took the name since we looked: try the next one
        except OSError as error:
            journal.mark(entry, "failed", error.strerror or str(error))
            verdict.status, verdict.error = FAILED, f"cannot {mode} to {destination}: {error.strerror}"
            return
        journal.mark(entry, "done")
        verdict.destination = destination
        return


def write_report(verdicts: list[Verdict], path: Path) -> None:
    """The CSV report, one row per image, in the order given."""
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(v.row() for v in verdicts)
