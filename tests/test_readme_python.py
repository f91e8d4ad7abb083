"""The README's Python section runs as written, on the real MobileNet and the bundled example photos."""
import re
import subprocess
import sys

import pytest

from tests.conftest import PROJECT

SECTION_HEADING = re.compile(r"^## .*Python.*$", re.MULTILINE)


def readme_python_code() -> str:
    """Every ```python block of the README section whose heading mentions Python, in order."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    heading = SECTION_HEADING.search(readme)
    assert heading, "README.md has no '## ...Python...' section"
    following = re.search(r"^## ", readme[heading.end():], re.MULTILINE)
    section = readme[heading.end():heading.end() + following.start() if following else len(readme)]
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert blocks, f"README.md's section {heading.group(0)!r} has no ```python block"
    return "\n".join(blocks)


@pytest.mark.integration
def test_readme_python_section_runs_as_written(tmp_path):
    # The snippet's relative paths are the checkout's: run it from a fresh folder that holds them, so what it
    # writes (out/) lands there; the options it does not give keep their defaults, as for a reader.
    (tmp_path / "examples").symlink_to(PROJECT / "examples")
    result = subprocess.run([sys.executable, "-c", readme_python_code()], cwd=tmp_path, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = (tmp_path / "out" / "retrained_graph.txt").read_text().split()
    assert labels == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert (tmp_path / "out" / "retrained_graph.json").is_file()
    lines = result.stdout.splitlines()
    accuracy = next(line for line in reversed(lines) if re.fullmatch(r"\d+\.\d%", line))
    assert float(accuracy[:-1]) >= 80
    label, score = next(line.split() for line in lines if line.split()[:1] and line.split()[0] in labels
                        and len(line.split()) == 2)
    assert label == "roses" and 0 < float(score) <= 1
    sorted_into = {path.name for path in (tmp_path / "out" / "sorted").iterdir() if path.is_dir()}
    assert set(labels) <= sorted_into <= {*labels, "_uncertain", "_unknown"}
