"""How the library talks to its user: one exception type for mistakes they can
fix, and the ``Log`` callback every stage prints its progress lines through.

The command-line wrapper that turns a ``UserError`` into one line and exit
code 2 (never a traceback), and an ``ExportMismatch`` into one line and exit
code 1, is ``retrain/cli/common.py``'s ``run_cli``.

Messages name an option as its caller spelled it: ``how_many_training_steps``
for a Python caller, ``--how_many_training_steps`` inside
``command_line_spelling()``, which ``run_cli`` holds around every tool.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Callable, Iterator

EXIT_USER_ERROR = 2
EXIT_EXPORT_MISMATCH = 1
EXIT_INTERRUPTED = 130

# Where a stage's progress and warning lines go: ``print`` on the command line, a list's ``append`` in tests.
Log = Callable[[str], None]

# Whether messages spell options as flags; a context variable, so a thread that wants it must copy the context.
_COMMAND_LINE_SPELLING: contextvars.ContextVar[bool] = contextvars.ContextVar("command_line_spelling",
                                                                             default=False)


@contextlib.contextmanager
def command_line_spelling() -> Iterator[None]:
    """Within this block the helpers below spell options as command-line flags (``run_cli`` holds it)."""
    token = _COMMAND_LINE_SPELLING.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE_SPELLING.reset(token)


def option_name(name: str) -> str:
    """An option as the caller spells it.

    Args:
        name: the option's flag name without dashes, e.g. ``"how_many_training_steps"``.

    Returns:
        ``"--how_many_training_steps"`` on the command line, ``"how_many_training_steps"`` otherwise.
    """
    return by_spelling(f"--{name}", name)


def option_value(name: str, value: str | os.PathLike) -> str:
    """An option given a value, as the caller would write it.

    Args:
        name: the option's flag name without dashes, e.g. ``"architecture"``.
        value: the value as it should read, formatted by the caller: ``repr(text)`` for a string, a path as is.

    Returns:
        ``"--architecture 'alexnet'"`` on the command line, ``"architecture='alexnet'"`` otherwise.
    """
    return by_spelling(f"--{name} {value}", f"{name}={value}")


def option_switch(name: str) -> str:
    """An on/off option turned on, as the caller would write it.

    Args:
        name: the switch's flag name without dashes, e.g. ``"trust_graph"``.

    Returns:
        ``"--trust_graph"`` on the command line, ``"trust_graph=True"`` otherwise.
    """
    return by_spelling(option_name(name), option_value(name, "True"))


def by_spelling(command_line: str, python: str) -> str:
    """Advice whose form, not just its spelling, differs between the two callers.

    Args:
        command_line: the text for the command line, e.g. ``"run with --list_architectures"``.
        python: the text for a Python caller.

    Returns:
        ``command_line`` inside ``command_line_spelling()``, else ``python``.
    """
    return command_line if _COMMAND_LINE_SPELLING.get() else python


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first non-blank line of ``error``'s message, at most ``limit`` characters, or its type's name.

    Converters and runtimes (TensorFlow's, tf2onnx, onnxruntime) raise messages of many lines, C++ stacks
    included: one line of it is what a one-line error can quote.
    """
    line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return line[:limit]


class UserError(Exception):
    """A problem with the user's input, flags or files, with a fix in the message."""


class ExportMismatch(Exception):
    """A written float model predicts differently from the model it was made from.

    Not a ``UserError``: nothing the user typed is wrong, the file is. The
    CLI prints it as one ``error: ...`` line with exit code 1.
    """
