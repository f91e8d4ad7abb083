"""What one option is: the one declaration argparse, the docs, the API's keywords and the library's defaults read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOOLS = ("retrain", "label_image", "relabel", "evaluate", "export", "visualize_filters", "extract_bottlenecks")
# Tool families that share options.
LABELLING = ("label_image", "relabel", "evaluate", "export")  # run a graph on images
GRAPH_TOOLS = (*LABELLING, "visualize_filters")  # load a graph through --graph
BACKBONE_TOOLS = ("retrain", "extract_bottlenecks")  # run a registry backbone or TF-Hub module
IMAGE_TOOLS = ("retrain", *LABELLING, "extract_bottlenecks")  # decode images, under a pixel budget


@dataclass(frozen=True)
class Option:
    """One option of one or more tools: the keyword ``name`` and the flag ``--name``.

    Attributes:
        name: the keyword argument, and without its dashes the flag.
        default: the value when the option is not given; ``False`` makes an on/off switch.
        help: what --help shows, teaching when to use it; ``%(default)s`` stands for the default.
        group: the --help section it is listed in; "" for the tool's own, first section.
        tools: the tools that take it.
        type: the value's type, declared only where the default (None) cannot tell it; otherwise a None
            default means a string (a path or a name), as argparse reads it.
        field: for the retrain tool, where the value goes in ``RetrainOptions`` (``"training.steps"``);
            None: the field of the option's own name; "": no field (the backbone flags, read together).
        required: the tools where the option must be given.
        metavar: how --help shows the value, where the name does not say it.
        nargs: argparse's ``nargs``, for an option that takes several values.
    """
    name: str
    default: Any
    help: str
    group: str
    tools: tuple[str, ...]
    type: type | None = None
    field: str | None = None
    required: tuple[str, ...] = ()
    metavar: str | None = None
    nargs: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.tools + self.required) - set(TOOLS)
        if unknown or not set(self.required) <= set(self.tools):
            raise ValueError(f"option {self.name}: tools {sorted(unknown)} unknown or required by a tool without it")

    @property
    def value_type(self) -> type:
        """The type of the option's values: the declared one, else the default's, else str."""
        return self.type or (str if self.default is None else type(self.default))

    @property
    def switch(self) -> bool:
        """Whether it is an on/off flag (``store_true``): the options whose default is False."""
        return self.default is False

    @property
    def field_path(self) -> str:
        """Where the retrain tool's value goes in ``RetrainOptions``, dotted; "" for none."""
        return self.name if self.field is None else self.field
