"""Project-relative defaults and crash-safe file writing."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = PROJECT_ROOT / "models"
DEFAULT_BOTTLENECK_DIR = PROJECT_ROOT / "bottlenecks"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place.

    A crash or SIGKILL mid-write leaves only a ``.tmp`` file, never a
    half-written file under the final name.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror}; choose a writable location") from None
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        _remove_quietly(tmp)
        raise UserError(f"cannot write {path}: {error.strerror}; free some space or choose another location") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str | os.PathLike) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
