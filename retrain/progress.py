"""Progress bars that suit where the output goes: a notebook, a terminal, or a log file.

tqdm redraws its bar with carriage returns, which a log file (CI, ``nohup``) keeps
as one ever-growing line per redraw. Off a terminal we print plain lines instead:
one at each tenth of the way, at most one every ``LINE_EVERY_SECONDS`` between
them, and a final one.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Callable, Generic, Iterable, Iterator, TypeVar

from tqdm import tqdm
from tqdm.auto import tqdm as notebook_tqdm

Item = TypeVar("Item")

LINE_EVERY_SECONDS = 10.0  # off a terminal, the longest wait for a line while nothing reaches a tenth
LINES_PER_TOTAL = 10  # ... and a line at each tenth of the total


class LineProgress(Generic[Item]):
    """The part of tqdm's interface our stages use, printing whole lines such as
    ``Bottlenecks: 300/1000 (30%), 12 s``."""

    def __init__(self, iterable: Iterable[Item] | None, desc: str, total: float | None, unit: str,
                 unit_scale: bool, stream: IO[str], clock: Callable[[], float] = time.monotonic):
        self.iterable, self.desc, self.total, self.unit, self.unit_scale = iterable, desc, total, unit, unit_scale
        self.stream, self.clock = stream, clock
        self.n = 0
        self.started = self.last_line_at = clock()
        self.last_line_n: float | None = None
        self.closed = False

    def __iter__(self) -> Iterator[Item]:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count ``n`` more done; print a line if a tenth was crossed or the last line is old."""
        before, self.n = self.n, self.n + n
        crossed_a_tenth = bool(self.total) and (self.n * LINES_PER_TOTAL // self.total
                                                > before * LINES_PER_TOTAL // self.total)
        if crossed_a_tenth or self.clock() - self.last_line_at >= LINE_EVERY_SECONDS:
            self._line()

    def refresh(self) -> None:
        """A no-op, as lines are printed when progress is made (tqdm redraws here)."""

    def close(self) -> None:
        """Print the final line, unless the last one already said it."""
        if not self.closed:
            self.closed = True
            if self.last_line_n != self.n:
                self._line()

    def _count(self, n: float) -> str:
        return tqdm.format_sizeof(n, self.unit) if self.unit_scale else f"{n:g}"

    def _line(self) -> None:
        elapsed = self.clock() - self.started
        done = f"{self._count(self.n)}/{self._count(self.total)} ({self.n / self.total:.0%})" if self.total else (
            f"{self._count(self.n)} {'' if self.unit_scale else self.unit}".rstrip())
        self.stream.write(f"{self.desc}: {done}, {elapsed:.0f} s\n")
        self.stream.flush()
        self.last_line_at, self.last_line_n = self.clock(), self.n


def _in_notebook(stream: IO[str]) -> bool:
    """Jupyter replaces stderr with ipykernel's stream; tqdm.auto then draws a notebook widget."""
    return type(stream).__module__.startswith("ipykernel")


def progress_bar(iterable: Iterable[Item] | None = None, *, desc: str, total: float | None = None,
                 unit: str = "it", unit_scale: bool = False, disable: bool = False) -> tqdm | LineProgress:
    """A progress bar on stderr, like ``tqdm(iterable, ...)``, in the form that suits where stderr goes.

    Args:
        iterable: what to iterate over while counting, or None to count with ``update(n)``.
        desc: what is being done, e.g. ``"Bottlenecks"``.
        total: how many there will be; defaults to ``len(iterable)`` where it has one; None when unknown.
        unit: what is counted (``"img"``, ``"B"``, ...).
        unit_scale: show counts with SI prefixes (``12.3MB``), for bytes.
        disable: show nothing (the returned bar still iterates and counts).

    Returns:
        A notebook widget in Jupyter, a tqdm bar in a terminal, else a ``LineProgress`` writing whole lines.
        Each iterates over ``iterable``, works as a context manager and has ``update``, ``refresh`` and ``close``.
    """
    stream = sys.stderr
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _in_notebook(stream):
        return notebook_tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, disable=disable)
    if disable or getattr(stream, "isatty", lambda: False)():
        return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, disable=disable,
                    file=stream)
    return LineProgress(iterable, desc, total, unit, unit_scale, stream)
