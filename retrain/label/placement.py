"""Put a file at a new name without ever replacing, losing or half-writing one.

New names are made only with calls that fail instead of replacing
(``os.link``, ``os.symlink``); a copy is written under a temporary name and
fsync'd first; a move across filesystems is a copy, then the removal of the
original. relabel and its undo use nothing else to touch the user's files.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

from ..files import content_key, remove_quietly


def holds_content(path: Path, sha1: str) -> bool:
    """Whether ``path`` is a regular file with this content."""
    return path.is_file() and not path.is_symlink() and content_key(path) == sha1


def temporary_for(destination: Path) -> Path:
    # A fixed name, so a rerun can find and remove what a killed copy left.
    return destination.with_name(f".{destination.name}.relabel-tmp")


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
    temporary = temporary_for(destination)
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
