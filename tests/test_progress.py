"""Progress bars: whole lines off a terminal (log files, CI), tqdm in a terminal, tqdm.auto in Jupyter."""
import io

from tqdm import tqdm

from retrain import progress
from retrain.progress import LineProgress, progress_bar


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_many_updates_give_a_few_whole_lines(capsys):
    for _ in progress_bar(range(1000), desc="Bottlenecks", unit="img"):
        pass
    err = capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert lines == [f"Bottlenecks: {n}/1000 ({n // 10}%), 0 s" for n in range(100, 1001, 100)]


def test_a_line_every_ten_seconds_between_tenths_and_a_final_line():
    stream, clock = io.StringIO(), FakeClock()
    with LineProgress(None, "Computing bottlenecks", None, "img", False, stream, clock) as bar:
        for _ in range(30):  # 30 updates over 30 s, total unknown: a line each 10 s
            clock.now += 1
            bar.update(2)
        clock.now += 1
        bar.update(1)
    assert stream.getvalue().splitlines() == [f"Computing bottlenecks: {n} img, {n // 2} s" for n in (20, 40, 60)] + [
        "Computing bottlenecks: 61 img, 31 s"]


def test_the_final_line_is_not_repeated_and_bytes_are_scaled():
    stream = io.StringIO()
    bar = LineProgress(None, "Downloading graph.pb", 2_000_000, "B", True, stream)
    bar.update(2_000_000)
    bar.close()
    bar.close()
    assert stream.getvalue() == "Downloading graph.pb: 2.00MB/2.00MB (100%), 0 s\n"


def test_a_terminal_gets_tqdm_and_a_notebook_tqdm_auto(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress_bar(total=3, desc="Evaluating")
    assert type(bar) is tqdm
    bar.close()

    class Notebook(io.StringIO):
        pass

    Notebook.__module__ = "ipykernel.iostream"
    monkeypatch.setattr("sys.stderr", Notebook())
    monkeypatch.setattr(progress, "notebook_tqdm", lambda *args, **kwargs: "notebook bar")
    assert progress_bar(total=3, desc="Evaluating") == "notebook bar"


def test_disabled_bars_print_nothing_and_still_iterate(capsys):
    assert list(progress_bar(range(3), desc="Report images", disable=True)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
