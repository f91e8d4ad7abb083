"""The relabel journal: an append-only record of every file operation, for resuming and undo.

Each operation gets a ``plan`` line, fsync'd, BEFORE a file is touched and a
``done`` line after. After a SIGKILL the files on disk tell how far the one
unfinished operation got (``settle``), so a rerun finishes it, and ``undo``
reverses everything, newest first, never destroying the only copy of a file.
"""
from __future__ import annotations

import fcntl
import json
import os
import uuid
from pathlib import Path

from ..errors import Log, UserError, option_name, option_value
from ..files import remove_quietly
from ..progress import progress_bar
from .placement import holds_content, place_file, temporary_for

JOURNAL_NAME = "relabel_journal.jsonl"


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
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"{self.path} is not a relabel journal (not text); pass the {JOURNAL_NAME} relabel "
                            f"wrote") from None
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the torn last line of a killed run; its plan was never acted on
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def __enter__(self) -> "Journal":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a+b")
        except OSError as error:
            raise UserError(f"cannot write the journal {self.path}: {error.strerror}; choose a writable "
                            f"{option_name('output_dir')}") from None
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

    def plan(self, mode: str, source: Path, destination: Path, sha1: str, top: list[tuple[str, float]],
             current_label: str | None, verdict: dict | None = None) -> dict:
        """Record an operation about to happen, with the image's verdict (its top labels and folder's label, and
        ``verdict``'s other fields: its unknown score, whether it is none of the labels, and why it goes there)."""
        self._count += 1
        entry = {"op": "plan", "id": f"{self._run}-{self._count}", "mode": mode, "source": str(source),
                 "destination": str(destination), "sha1": sha1, "top": top, "current_label": current_label,
                 **(verdict or {})}
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

    def resume(self, log: Log) -> list[dict]:
        """Finish what a killed run left half done; returns every operation in effect (done, not undone)."""
        done, pending = self.operations()
        finished = 0
        for entry in pending:
            if settle(entry) or replay(entry):
                self.mark(entry, "done")
                done.append(entry)
                finished += 1
            else:
                self.mark(entry, "failed", "not done when its run was interrupted; its source is sorted afresh")
        if pending:
            log(f"Resumed an interrupted run: {finished} of {len(pending)} unfinished operation(s) completed")
        return done


def settle(entry: dict) -> bool:
    """Complete or recognise an operation a killed run left unrecorded; True if its result is in place."""
    source, destination, sha1 = Path(entry["source"]), Path(entry["destination"]), entry["sha1"]
    remove_quietly(temporary_for(destination))
    if entry["mode"] == "symlink":
        return destination.is_symlink() and os.readlink(destination) == os.path.abspath(source)
    if not holds_content(destination, sha1):
        return False
    if entry["mode"] == "move" and holds_content(source, sha1):
        os.unlink(source)  # killed between making the new name and removing the old one
    return True


def replay(entry: dict) -> bool:
    """Carry out a journalled operation that never started; False if it no longer can."""
    source = Path(entry["source"])
    if not holds_content(source, entry["sha1"]):
        return False
    try:
        place_file(source, Path(entry["destination"]), entry["mode"])
    except OSError:
        return False
    return True


def undo(journal_path: str | os.PathLike, log: Log = print) -> int:
    """Reverse every operation in the journal, newest first; returns how many could not be reversed.

    Moved files go back to their original paths (never over a file that has
    taken that name since), copies and links are removed, and a copy is kept
    if the original is gone or the copy was changed: undo never destroys the
    only version of anything. Safe to rerun after an interruption.
    """
    journal = Journal(journal_path)
    if not journal.path.is_file():
        raise UserError(f"{option_value('undo', journal_path)} does not exist; pass the journal relabel printed "
                        f"(<output_dir>/{JOURNAL_NAME})")
    with journal:
        done, pending = journal.operations()
        in_place = [entry for entry in pending if settle(entry)]
        for entry in in_place:
            journal.mark(entry, "done")
        for entry in pending:
            if entry not in in_place:
                journal.mark(entry, "failed", "not done when its run was interrupted")
        order = {e["id"]: i for i, e in enumerate(journal.entries()) if e.get("op") == "plan"}
        operations = sorted(done + in_place, key=lambda e: order[e["id"]], reverse=True)
        problems = 0
        for entry in progress_bar(operations, desc="Undoing", unit="file"):
            problem = _reverse(entry)
            if problem:
                problems += 1
                log(f"warning: {problem}")
            else:
                journal.mark(entry, "undone")
        for folder in sorted({Path(e["destination"]).parent for e in operations}, reverse=True):
            try:
                folder.rmdir()  # only succeeds when empty: a label folder this journal created
            except OSError:
                pass
    log(f"Undid {len(operations) - problems} of {len(operations)} operation(s) from {journal.path}")
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
        if not holds_content(destination, sha1):
            return f"kept {destination}: it changed after it was copied"
        if not holds_content(source, sha1):
            return f"kept {destination}: the original {source} is gone or changed, so this is the only copy"
        os.unlink(destination)
        return None
    if os.path.lexists(source):
        if holds_content(source, sha1) and holds_content(destination, sha1):
            os.unlink(destination)  # an interrupted undo had already put the file back
            return None
        return f"kept {destination}: another file now has its original name {source}"
    try:
        place_file(destination, source, "move")
    except OSError as error:
        return f"cannot move {destination} back to {source}: {error.strerror or error}"
    return None
