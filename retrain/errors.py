"""How the library talks to its user: one exception type for mistakes they can
fix, and the ``Log`` callback every stage prints its progress lines through.

The command-line wrapper that turns a ``UserError`` into one line and exit
code 2 (never a traceback), and an ``ExportMismatch`` into one line and exit
code 1, is ``retrain/cli/common.py``'s ``run_cli``.
"""
from __future__ import annotations

from typing import Callable

EXIT_USER_ERROR = 2
EXIT_EXPORT_MISMATCH = 1
EXIT_INTERRUPTED = 130

# Where a stage's progress and warning lines go: ``print`` on the command line, a list's ``append`` in tests.
Log = Callable[[str], None]


class UserError(Exception):
    """A problem with the user's input, flags or files, with a fix in the message."""


class ExportMismatch(Exception):
    """A written float model predicts differently from the model it was made from.

    Not a ``UserError``: nothing the user typed is wrong, the file is. The
    CLI prints it as one ``error: ...`` line with exit code 1.
    """
