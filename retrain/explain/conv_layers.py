"""Which convolutional layer ``--layer`` and ``--gradcam_layer`` mean.

Users name a block of the registry row (``conv_blocks``: ``Conv2d_11`` for
MobileNet v1) or any tensor of the graph. A retrained graph's sidecar names
its backbone, so its blocks are known too; a Poets graph or a TF-Hub one has
none, and then the caller finds the last spatial tensor itself
(``ImportedGraph.last_feature_map``).
"""
from __future__ import annotations

import os
from typing import Mapping

from ..errors import UserError, option_value
from ..graph_contract import Sidecar
from ..models.architectures import ARCHITECTURES


def graph_blocks(graph_path: str | os.PathLike) -> Mapping[str, str]:
    """The blocks of the backbone a retrained graph's sidecar names (empty for a Poets graph or a TF-Hub one)."""
    sidecar = Sidecar.read(graph_path)
    spec = ARCHITECTURES.get(sidecar.architecture) if sidecar else None
    return spec.conv_blocks if spec else {}


def resolve_layer(blocks: Mapping[str, str], layer: str | None, option: str = "layer") -> str | None:
    """A block name -> its tensor; None -> the last block (None if there are none); others are tensor names.

    A name with no ``/`` and no ``:`` can only be a block name, so an unknown
    one is refused here with the valid names listed, naming ``option`` (``layer`` or ``gradcam_layer``).
    """
    if layer is None:
        return list(blocks.values())[-1] if blocks else None
    if layer in blocks:
        return blocks[layer]
    if "/" not in layer and ":" not in layer:
        valid = ", ".join(blocks) if blocks else "none are registered for this backbone"
        raise UserError(f"{option_value(option, repr(layer))} is not a block of this backbone (blocks: {valid}); "
                        f"or pass a full tensor name of the graph")
    return layer
