"""Sort a folder tree of images into one folder per predicted label, safely.

Users point this at a camera roll, a scraped dump or an existing labelled
dataset. Three promises shape the code:

* **Nothing is lost or overwritten.** A taken name gets ``name (1).jpg``;
  files are only ever created with calls that fail instead of replacing
  (``os.link``, ``os.symlink``), and a move across filesystems is a copy,
  then the removal of the original.
* **Every file operation is journalled.** An append-only JSON-lines journal
  gets a ``plan`` line, fsync'd, BEFORE a file is touched and a ``done`` line
  after. After a SIGKILL the files on disk tell how far the one unfinished
  operation got (``_settle``), so a rerun finishes it and ``undo`` reverses
  everything, newest first.
* **A rerun is a no-op for what is already sorted.** Sources recorded as done
  (same path, same content hash) are skipped, and files the journal put in the
  output are never taken as new input.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from .bottlenecks import content_key
from .errors import UserError
from .images import iter_image_files, label_for_folder
from .labeler import GraphLabeler
from .paths import atomic_write, remove_quietly

MODES = ("copy", "move", "symlink", "report")
PAST_TENSE = {"copy": "copied", "move": "moved", "symlink": "linked", "report": "predicted"}
SORTED_EARLIER = "sorted earlier"
UNREADABLE = "unreadable"
FAILED = "failed"
UNCERTAIN_FOLDER = "_uncertain"
JOURNAL_NAME = "relabel_journal.jsonl"
REPORT_NAME = "relabel_report.csv"
TOP_K = 3
REPORT_COLUMNS = ["source", "status", "predicted_label", "confidence", "top3", "current_label", "disagrees",
                  "destination", "error"]

Report = Callable[[str], None]


@dataclass
class Verdict:
    """What relabel found and did for one image: one row of the CSV report."""
    source: Path
    status: str
    top: list[tuple[str, float]] = field(default_factory=list)  # best first
    current_label: str | None = None  # the class folder it sits in, if that is one of the graph's labels
    destination: Path | None = None
    error: str = ""

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
        return [str(self.source), self.status, self.predicted, f"{self.confidence:.4f}" if self.top else "",
                "; ".join(f"{label} {p:.4f}" for label, p in self.top), self.current_label or "",
                "yes" if self.disagrees else ("no" if self.current_label and self.top else ""),
                str(self.destination or ""), self.error]


@dataclass
class RelabelOptions:
    """One relabel run; the CLI flags map onto these one to one."""
    image_dir: str
    output_dir: str | None = None
    mode: str = "copy"
    min_confidence: float = 0.5
    batch_size: int = 32
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

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)


class Journal:
    """The append-only, fsync'd record of a run's file operations (see the module docstring).

    Lines: ``plan`` (id, mode, source, destination, sha1 and the verdict, so
    later runs can report on images that are no longer in the input),
    ``done``, ``failed`` (the operation did not happen) and ``undone``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle = None
        self._run = uuid.uuid4().hex[:12]
        self._count = 0

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # the torn last line of a killed run; its plan was never acted on
        return entries

    def __enter__(self) -> "Journal":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a+b")
        except OSError as error:
            raise UserError(f"cannot write the journal {self.path}: {error.strerror}; choose a writable "
                            f"--output_dir") from None
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.close()
            raise UserError(f"another relabel is using {self.path}; wait for it to finish") from None
        if self._handle.seek(0, os.SEEK_END):
            self._handle.seek(-1, os.SEEK_END)
            if self._handle.read(1) != b"\n":
                self._handle.write(b"\n")  # start after a torn line, not inside it
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def write(self, entry: dict) -> None:
        self._handle.write((json.dumps(entry) + "\n").encode("utf-8"))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def plan(self, mode: str, source: Path, destination: Path, sha1: str, verdict: Verdict) -> dict:
        self._count += 1
        entry = {"op": "plan", "id": f"{self._run}-{self._count}", "mode": mode, "source": str(source),
                 "destination": str(destination), "sha1": sha1, "top": verdict.top,
                 "current_label": verdict.current_label}
        self.write(entry)
        return entry

    def mark(self, entry: dict, op: str, error: str = "") -> None:
        self.write({"op": op, "id": entry["id"], **({"error": error} if error else {})})

    def operations(self) -> tuple[list[dict], list[dict]]:
        """(done and not undone, planned and not closed), each in journal order."""
        plans: dict[str, dict] = {}
        state: dict[str, str] = {}
        for entry in self.entries():
            if entry.get("op") == "plan":
                plans[entry["id"]] = entry
            elif entry.get("id") in plans:
                state[entry["id"]] = entry["op"]
        done = [plan for key, plan in plans.items() if state.get(key) == "done"]
        pending = [plan for key, plan in plans.items() if key not in state]
        return done, pending

    def resume(self, report: Report) -> list[dict]:
        """Finish what a killed run left half done; returns every operation in effect (done, not undone)."""
        done, pending = self.operations()
        finished = 0
        for entry in pending:
            if _settle(entry) or _replay(entry):
                self.mark(entry, "done")
                done.append(entry)
                finished += 1
            else:
                self.mark(entry, "failed", "not done when its run was interrupted; its source is sorted afresh")
        if pending:
            report(f"Resumed an interrupted run: {finished} of {len(pending)} unfinished operation(s) completed")
        return done


def _holds(path: Path, sha1: str) -> bool:
    """Whether ``path`` is a regular file with this content."""
    return path.is_file() and not path.is_symlink() and content_key(path) == sha1


def _temporary_for(destination: Path) -> Path:
    # A fixed name, so a rerun can find and remove what a killed copy left.
    return destination.with_name(f".{destination.name}.relabel-tmp")


def _settle(entry: dict) -> bool:
    """Complete or recognise an operation a killed run left unrecorded; True if its result is in place."""
    source, destination, sha1 = Path(entry["source"]), Path(entry["destination"]), entry["sha1"]
    remove_quietly(_temporary_for(destination))
    if entry["mode"] == "symlink":
        return destination.is_symlink() and os.readlink(destination) == os.path.abspath(source)
    if not _holds(destination, sha1):
        return False
    if entry["mode"] == "move" and _holds(source, sha1):
        os.unlink(source)  # killed between making the new name and removing the old one
    return True


def _replay(entry: dict) -> bool:
    """Carry out a journalled operation that never started; False if it no longer can."""
    source = Path(entry["source"])
    if not _holds(source, entry["sha1"]):
        return False
    try:
        place_file(source, Path(entry["destination"]), entry["mode"])
    except OSError:
        return False
    return True


def place_file(source: Path, destination: Path, mode: str) -> None:
    """Copy, move or symlink ``source`` to ``destination``; FileExistsError if that name is taken.

    Never replaces a file: new names are made with ``os.link``/``os.symlink``,
    which fail on an existing name, and a move removes the original only after
    the new name holds the complete file.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(os.path.abspath(source), destination)
        return
    if mode == "move":
        try:
            os.link(source, destination)  # same filesystem: instant, and the bytes never move
        except FileExistsError:
            raise
        except OSError:
            _copy_exclusive(source, destination)  # another filesystem, or one without hard links
        os.unlink(source)
        return
    _copy_exclusive(source, destination)


def _copy_exclusive(source: Path, destination: Path) -> None:
    """Copy under a temporary name, fsync, then give it the final name only if that is free."""
    temporary = _temporary_for(destination)
    try:
        shutil.copy2(source, temporary)  # copy2 keeps the dates: a camera roll is often sorted by them
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(temporary, destination)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (e.g. FAT): check, then rename
            if os.path.lexists(destination):
                raise FileExistsError(destination) from None
            os.rename(temporary, destination)
    finally:
        remove_quietly(temporary)


def candidate_names(folder: Path, name: str) -> Iterator[Path]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, ... in ``folder``."""
    stem, suffix = os.path.splitext(name)
    yield folder / name
    number = 1
    while True:
        yield folder / f"{stem} ({number}){suffix}"
        number += 1


def folder_for_label(label: str) -> str:
    """A safe folder name for a label (labels files are free text)."""
    name = label.replace(os.sep, "_").replace("\0", "_").strip()
    return name if name not in ("", ".", "..") else f"_{name}_"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _current_label(path: Path, image_dir: Path, labels_by_folder: dict[str, str]) -> str | None:
    """The graph label named by the top-level folder the image sits in, if any."""
    parts = path.relative_to(image_dir).parts
    return labels_by_folder.get(label_for_folder(parts[0])) if len(parts) > 1 else None


def check_options(options: RelabelOptions) -> tuple[Path, Path | None, Path]:
    """(image_dir, output_dir, report path), resolved and checked."""
    if options.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    if not options.image_dir:
        raise UserError("no --image_dir given; point it at the folder of images to sort")
    image_dir = Path(options.image_dir).resolve()
    if not image_dir.is_dir():
        raise UserError(f"--image_dir {options.image_dir} is not a folder; point it at the folder of images to sort")
    if not 0.0 <= options.min_confidence <= 1.0:
        raise UserError(f"--min_confidence must be from 0 to 1, got {options.min_confidence}")
    if options.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {options.batch_size}")
    output_dir = Path(options.output_dir).resolve() if options.output_dir else None
    if output_dir is None and options.mode != "report":
        raise UserError(f"--mode {options.mode} needs --output_dir: where the class folders go")
    if output_dir is not None and _inside(image_dir, output_dir):
        raise UserError(f"--image_dir {options.image_dir} is inside --output_dir {options.output_dir}; "
                        f"choose an output folder outside the images")
    if options.report_path:
        report_path = Path(options.report_path)
    elif output_dir is not None:
        report_path = output_dir / REPORT_NAME
    else:
        raise UserError("--mode report needs --report FILE.csv (or --output_dir to put it in)")
    return image_dir, output_dir, report_path


def relabel(labeler: GraphLabeler, options: RelabelOptions, report: Report = print) -> RelabelResult:
    """Classify every image under ``image_dir`` and sort it into ``output_dir/<label>/``."""
    image_dir, output_dir, report_path = check_options(options)
    journal = None
    if options.mode != "report":
        journal = Journal(Path(options.journal_path) if options.journal_path else output_dir / JOURNAL_NAME)
    with journal or contextlib.nullcontext():
        earlier = journal.resume(report) if journal else []
        verdicts = _classify_and_sort(labeler, options, image_dir, output_dir, journal, earlier, report)
    verdicts.sort(key=lambda v: (not v.disagrees, v.status == UNREADABLE, -v.confidence, str(v.source)))
    write_report(verdicts, report_path)
    return RelabelResult(verdicts, report_path, journal.path if journal else None)


def _classify_and_sort(labeler: GraphLabeler, options: RelabelOptions, image_dir: Path, output_dir: Path | None,
                       journal: Journal | None, earlier: list[dict], report: Report) -> list[Verdict]:
    made_by_us = {Path(entry["destination"]) for entry in earlier}
    sorted_before = {Path(e["source"]): e for e in earlier if os.path.lexists(e["destination"])}
    verdicts = [Verdict(source, SORTED_EARLIER, [tuple(t) for t in e["top"]], e["current_label"],
                        Path(e["destination"])) for source, e in sorted_before.items() if _inside(source, image_dir)]
    todo = []
    for path in iter_image_files(image_dir):
        if (output_dir is not None and _inside(path, output_dir)) or path in made_by_us:
            continue
        entry = sorted_before.get(path)
        if entry is not None and _holds(path, entry["sha1"]):
            continue  # sorted by an earlier run and unchanged since
        todo.append(path)
    skipped = len(verdicts)
    if skipped:
        report(f"{skipped} image(s) were sorted by an earlier run into {output_dir}; skipping them")
    labels_by_folder = {label_for_folder(label): label for label in labeler.labels}
    predictions = labeler.predict_files(todo, options.batch_size)
    for path, probabilities, error in tqdm(predictions, total=len(todo), desc="Relabelling", unit="img"):
        verdict = Verdict(path, UNREADABLE, current_label=_current_label(path, image_dir, labels_by_folder),
                          error=error or "")
        if probabilities is not None:
            verdict.top = labeler.top_labels(probabilities, TOP_K)
            verdict.status = PAST_TENSE[options.mode]
            if journal is not None:
                folder = UNCERTAIN_FOLDER if verdict.confidence < options.min_confidence else \
                    folder_for_label(verdict.predicted)
                _sort_one(journal, options.mode, verdict, output_dir / folder)
        verdicts.append(verdict)
    if not labeler.batched:
        report("note: this graph has batch size 1 baked in past its input, so images went through it one at a time")
    return verdicts


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
        entry = journal.plan(mode, verdict.source, destination, sha1, verdict)
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


def undo(journal_path: str | os.PathLike, report: Report = print) -> int:
    """Reverse every operation in the journal, newest first; returns how many could not be reversed.

    Moved files go back to their original paths (never over a file that has
    taken that name since), copies and links are removed, and a copy is kept
    if the original is gone or the copy was changed: undo never destroys the
    only version of anything. Safe to rerun after an interruption.
    """
    journal = Journal(journal_path)
    if not journal.path.is_file():
        raise UserError(f"--undo {journal_path} does not exist; pass the journal relabel printed "
                        f"(<output_dir>/{JOURNAL_NAME})")
    with journal:
        done, pending = journal.operations()
        in_place = [entry for entry in pending if _settle(entry)]
        for entry in in_place:
            journal.mark(entry, "done")
        for entry in pending:
            if entry not in in_place:
                journal.mark(entry, "failed", "not done when its run was interrupted")
        order = {e["id"]: i for i, e in enumerate(journal.entries()) if e.get("op") == "plan"}
        operations = sorted(done + in_place, key=lambda e: order[e["id"]], reverse=True)
        problems = 0
        for entry in tqdm(operations, desc="Undoing", unit="file"):
            problem = _reverse(entry)
            if problem:
                problems += 1
                report(f"warning: {problem}")
            else:
                journal.mark(entry, "undone")
        for folder in sorted({Path(e["destination"]).parent for e in operations}, reverse=True):
            try:
                folder.rmdir()  # only succeeds when empty: a label folder this journal created
            except OSError:
                pass
    report(f"Undid {len(operations) - problems} of {len(operations)} operation(s) from {journal.path}")
    return problems


def _reverse(entry: dict) -> str | None:
    """Undo one completed operation; a message if it must be left as it is."""
    source, destination, sha1, mode = Path(entry["source"]), Path(entry["destination"]), entry["sha1"], entry["mode"]
    if mode == "symlink":
        if destination.is_symlink():
            os.unlink(destination)
        return None
    if not os.path.lexists(destination):
        if mode == "move" and not source.exists():
            return f"{destination} is gone, so {source} cannot be restored"
        return None
    if mode == "copy":
        if not _holds(destination, sha1):
            return f"kept {destination}: it changed after it was copied"
        if not _holds(source, sha1):
            return f"kept {destination}: the original {source} is gone or changed, so this is the only copy"
        os.unlink(destination)
        return None
    if os.path.lexists(source):
        if _holds(source, sha1) and _holds(destination, sha1):
            os.unlink(destination)  # an interrupted undo had already put the file back
            return None
        return f"kept {destination}: another file now has its original name {source}"
    try:
        place_file(destination, source, "move")
    except OSError as error:
        return f"cannot move {destination} back to {source}: {error.strerror or error}"
    return None
