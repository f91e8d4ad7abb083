"""One exception type for mistakes a user can fix, and the CLI wrapper that
turns it into a single line and exit code 2 (never a traceback)."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, Sequence

from .quiet import silence_tensorflow_startup

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input, flags or files, with a fix in the message."""


def run_cli(main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> NoReturn:
    """Run a script's ``main`` and exit; user errors become one stderr line."""
    silence_tensorflow_startup()
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 (an old archive's) must print, not crash the run.
        stream.reconfigure(errors="backslashreplace")
    try:
        code = main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun to continue", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)
