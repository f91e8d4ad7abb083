"""Every option of every tool, in --help order, and how the rest of the project looks one up."""
from __future__ import annotations

from typing import Any

from .inputs import BACKBONE, CACHE, GRAPH, HOSTILE_INPUTS, IMAGES
from .option import TOOLS, Option
from .outputs import DEPLOY, LABELLING_TOOLS, OUTPUTS, VISUALIZE_FILTERS
from .training import DISTORTIONS, FINE_TUNING, HEAD, TRAINING

# A tool's --help sections come in the order their first option appears here.
OPTIONS: tuple[Option, ...] = (*IMAGES, *BACKBONE, *CACHE, *TRAINING, *HEAD, *FINE_TUNING, *DISTORTIONS, *OUTPUTS,
                               *GRAPH, *HOSTILE_INPUTS, *DEPLOY, *LABELLING_TOOLS, *VISUALIZE_FILTERS)


def options_of(tool: str) -> tuple[Option, ...]:
    """The options ``tool`` takes, in --help order.

    Args:
        tool: one of ``TOOLS``.

    Returns:
        Its options; each name appears once.
    """
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; the tools are {', '.join(TOOLS)}")
    return tuple(option for option in OPTIONS if tool in option.tools)


def find(name: str, tool: str | None = None) -> Option:
    """The option called ``name``, of ``tool`` where two tools mean different things by it (--learning_rate).

    Args:
        name: the option's keyword.
        tool: the tool whose option it is; needed only when the name is declared for several tools apart.

    Returns:
        The one matching declaration.
    """
    matches = [option for option in OPTIONS if option.name == name and (tool is None or tool in option.tools)]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} options named {name!r}" + (f" for {tool}" if tool else "; name the tool"))
    return matches[0]


def default(name: str, tool: str | None = None) -> Any:
    """The default of option ``name``: what the library's dataclass fields and constants are set to.

    Args:
        name: the option's keyword (``"how_many_training_steps"``).
        tool: the tool, only where two tools declare the name apart (``default("learning_rate", "retrain")``).

    Returns:
        The table's default.
    """
    return find(name, tool).default


def _check_unique() -> None:
    """No tool takes two options of one name: its flags would clash."""
    for tool in TOOLS:
        names = [option.name for option in options_of(tool)]
        repeated = {name for name in names if names.count(name) > 1}
        if repeated:
            raise ValueError(f"{tool} declares {sorted(repeated)} more than once")


_check_unique()
