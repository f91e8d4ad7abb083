"""Keyword values for a tool's options, checked against the table, and the nested dataclass they fill."""
from __future__ import annotations

import difflib
import numbers
import os
import typing
from typing import Any, Collection, Iterable, Mapping

from ..errors import UserError
from .option import Option
from .table import options_of

# What each value type accepts, and how a message names it.
_KINDS: dict[type, tuple[type, str]] = {int: (numbers.Integral, "a whole number"), float: (numbers.Real, "a number"),
                                        bool: (bool, "True or False"), str: ((str, os.PathLike), "a string or a path")}


def checked_values(tool: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``tool`` with its value: the one given, or the table's default.

    Args:
        tool: the tool whose options ``values`` names (``"retrain"``).
        values: option keyword -> value, e.g. ``{"how_many_training_steps": 500}``.

    Returns:
        keyword -> value for every option of the tool, numbers as the option's type and paths as strings.

    Raises:
        UserError: a keyword that is not an option of ``tool`` (with the closest name), or a value of the wrong
            type.
    """
    declared = {option.name: option for option in options_of(tool)}
    refuse_unknown(values, declared, tool)
    return {name: _checked(option, values[name]) if name in values else option.default
            for name, option in declared.items()}


def refuse_unknown(names: Iterable[str], known: Collection[str], tool: str) -> None:
    """Raise a UserError for the first of ``names`` that is not in ``known``, suggesting the closest known name.

    Args:
        names: the keywords a caller gave.
        known: the keywords ``tool`` takes.
        tool: the tool, named in the message when no known name is close.
    """
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise UserError(f"unknown option {name!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                          f" for {tool}; it takes {', '.join(known)}"))


def _checked(option: Option, value: Any) -> Any:
    """``value`` as the option's type, or a UserError naming the option."""
    if value is None and option.default is None:
        return None
    accepted, kind = _KINDS[option.value_type]
    if not isinstance(value, accepted) or (option.value_type is not bool and isinstance(value, bool)):
        raise UserError(f"{option.name} takes {kind}, got {value!r}")
    return os.fspath(value) if option.value_type is str else option.value_type(value)


def build(options_class: type, tool: str, values: Mapping[str, Any], **given: Any) -> Any:
    """``options_class`` filled from checked ``values`` at each option's ``field_path``, nested dataclasses too.

    Args:
        options_class: the dataclass the tool's options fill (``RetrainOptions``).
        tool: the tool whose options' field paths say where each value goes.
        values: the output of ``checked_values``.
        given: fields the caller computed itself (the backbone, from the options without a field).

    Returns:
        The dataclass; its own checks run as it is made.
    """
    tree: dict[str, Any] = {}
    for option in options_of(tool):
        if option.field_path:
            *parents, leaf = option.field_path.split(".")
            branch = tree
            for parent in parents:
                branch = branch.setdefault(parent, {})
            branch[leaf] = values[option.name]
    return _filled(options_class, tree, given)


def _filled(options_class: type, tree: dict[str, Any], given: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(options_class)
    return options_class(**{name: _filled(hints[name], value, {}) if isinstance(value, dict) else value
                            for name, value in tree.items()}, **given)
