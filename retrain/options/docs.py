"""The flags documentation, rendered from the table: README's flags block and docs/flags.md.

``python -m retrain.options`` rewrites both; ``tests/test_options.py`` fails when either is stale.
"""
from __future__ import annotations

from typing import Any

from ..files import PROJECT_ROOT
from .option import TOOLS, Option
from .table import OPTIONS, options_of

README = PROJECT_ROOT / "README.md"
FLAGS_PAGE = PROJECT_ROOT / "docs" / "flags.md"
START, END = "<!-- flags:start -->", "<!-- flags:end -->"
REGENERATE = "python -m retrain.options"


def shown_default(option: Option, tool: str | None = None) -> str:
    """The default as the docs show it: a path in the project relative to it, "" for none, "required" if so.

    Args:
        option: the option.
        tool: the tool it is shown for; None for the table of every tool.

    Returns:
        Markdown for the default column.
    """
    if tool in option.required or (tool is None and option.required == option.tools):
        return "required"
    value: Any = option.default
    if option.switch or value in ("", None):
        return "off" if option.switch else ""
    if isinstance(value, str) and value.startswith(f"{PROJECT_ROOT}/"):
        value = value[len(str(PROJECT_ROOT)) + 1:] + "/"
    return f"`{value}`"


def help_text(option: Option) -> str:
    """The option's help as plain text: argparse's ``%(default)s`` filled in, ``%%`` undone."""
    return option.help.replace("%(default)s", str(option.default)).replace("%%", "%")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def flags_table() -> str:
    """README's summary: one row per --help section, its tools and its flags with their defaults.

    The help of every flag is in docs/flags.md (``flags_page``) and in each tool's --help.
    """
    sections: dict[str, dict[str, Option]] = {}  # a name declared apart for two tools is listed once
    for option in OPTIONS:
        # Options outside a named section are grouped by the tools that take them, so the row says whose they are.
        title = option.group or f"own options of {', '.join(option.tools)}"
        sections.setdefault(title, {}).setdefault(option.name, option)
    rows = ["| section | tools | flags (default) |", "| --- | --- | --- |"]
    for title, named in sections.items():
        options = list(named.values())
        tools = [tool for tool in TOOLS if any(tool in option.tools for option in options)]
        flags = ", ".join(f"`--{option.name}`" + (f" {shown_default(option)}" if shown_default(option) else "")
                          for option in options)
        rows.append(f"| {_cell(title)} | {'all' if tuple(tools) == TOOLS else ', '.join(tools)} | {_cell(flags)} |")
    return "\n".join(rows)


def flags_page() -> str:
    """docs/flags.md: every tool's flags in full, by --help section."""
    lines = ["# Every flag of every tool", "",
             f"Generated from `retrain/options` by `{REGENERATE}`; `python -m scripts.<tool> --help` shows the same. "
             "The Python API (`retrain.train(image_dir, **options)`) takes retrain's flags as keyword arguments, "
             "without the dashes.", ""]
    for tool in TOOLS:
        lines += [f"## {tool}", ""]
        sections: dict[str, list[Option]] = {"": []}  # as argparse lists them: its own section first
        for option in options_of(tool):
            sections.setdefault(option.group, []).append(option)
        for title, options in sections.items():
            if options:
                lines += [f"### {title or 'options'}", "", "| flag | default | what it does |", "| --- | --- | --- |",
                          *(f"| `--{option.name}` | {_cell(shown_default(option, tool))} | {_cell(help_text(option))} |"
                            for option in options), ""]
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    """``readme`` with the block between the flags markers replaced by ``flags_table()``; unchanged without them."""
    if START not in readme or END not in readme:
        return readme
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{flags_table()}\n{END}{tail}"


def main() -> None:
    """Rewrite README's flags block and docs/flags.md from the table."""
    README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    FLAGS_PAGE.parent.mkdir(exist_ok=True)
    FLAGS_PAGE.write_text(flags_page(), encoding="utf-8")
    print(f"Wrote the flags table in {README.name} and {FLAGS_PAGE.relative_to(PROJECT_ROOT)}")
