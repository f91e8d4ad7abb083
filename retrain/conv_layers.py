"""Named convolutional blocks of the registry's backbones, for ``--layer`` and Grad-CAM.

Each backbone maps block names (what users type) to the tensor holding the
block's output activations, in network order; the last one is the last
convolutional tensor Grad-CAM explains. Names are matched as suffixes of
graph tensor names (``imported_graph.py``), so they find the tensor both in
the backbone's own frozen graph and in a retrained graph built on it.
Backbones without an entry still get Grad-CAM: the last spatial tensor
before the output is found by walking the graph.
"""
from __future__ import annotations

from typing import Mapping

import os

from .architectures import ARCHITECTURES, ArchitectureSpec
from .errors import UserError
from .graph_contract import Sidecar


def _mobilenet_v1() -> dict[str, str]:
    """TF-slim MobileNet v1 (all widths and sizes share the scope names); checked on the bundled 1.0/224."""
    blocks = {"Conv2d_0": "MobilenetV1/MobilenetV1/Conv2d_0/Relu6:0"}
    blocks.update({f"Conv2d_{k}": f"MobilenetV1/MobilenetV1/Conv2d_{k}_pointwise/Relu6:0" for k in range(1, 14)})
    return blocks


def _mobilenet_v2() -> dict[str, str]:
    """TF-slim MobileNet v2: from slim's scope names (each block ends in an ``output`` identity); not run here."""
    blocks = {"Conv": "MobilenetV2/Conv/Relu6:0", "expanded_conv": "MobilenetV2/expanded_conv/output:0"}
    blocks.update({f"expanded_conv_{k}": f"MobilenetV2/expanded_conv_{k}/output:0" for k in range(1, 17)})
    blocks["Conv_1"] = "MobilenetV2/Conv_1/Relu6:0"
    return blocks


def conv_layers(spec: ArchitectureSpec) -> Mapping[str, str]:
    """Block name -> activation tensor for ``spec``, in network order (empty when not known)."""
    if spec.feature_tensor.startswith("MobilenetV1/"):
        return _mobilenet_v1()
    if spec.feature_tensor.startswith("MobilenetV2/"):
        return _mobilenet_v2()
    return {}


def graph_layers(graph_path: str | os.PathLike) -> Mapping[str, str]:
    """The blocks of the backbone a retrained graph's sidecar names (empty for a Poets graph or a TF-Hub one)."""
    sidecar = Sidecar.read(graph_path)
    spec = ARCHITECTURES.get(sidecar.architecture) if sidecar else None
    return conv_layers(spec) if spec else {}


def resolve_layer(layers: Mapping[str, str], layer: str | None, flag: str = "--layer") -> str | None:
    """A block name -> its tensor; None -> the last block; anything else is taken as a tensor name.

    A name with no ``/`` and no ``:`` can only be a block name, so an unknown
    one is refused here with the valid names listed.
    """
    if layer is None:
        return list(layers.values())[-1] if layers else None
    if layer in layers:
        return layers[layer]
    if "/" not in layer and ":" not in layer:
        valid = ", ".join(layers) if layers else "none are registered for this backbone"
        raise UserError(f"{flag} {layer!r} is not a block of this backbone (blocks: {valid}); "
                        f"or pass a full tensor name of the graph")
    return layer
