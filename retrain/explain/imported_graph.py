"""A frozen GraphDef imported once, cut between any two of its tensors.

Grad-CAM and filter visualisation need more than ``input -> final_result``:
they read a convolution's activations and differentiate through the rest of
the graph. Tensor names may carry a prefix (our exported graphs inline the
backbone under ``PartitionedCall/...``), so names are also matched by suffix,
which lets the registry's plain TF-slim names find their tensor in a Poets
graph and in ours alike.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Callable

from ..errors import UserError, option_name, option_value
from ..models.backbones import import_frozen_graph, load_graph_def, tensor_name


class ImportedGraph:
    """The tensors of one frozen graph, with a free batch dimension, callable between any two."""

    def __init__(self, graph_path: str | os.PathLike, trust_graph: bool = False):
        """Refuses a graph holding ops that do more than compute unless ``trust_graph`` (``graph_check.py``)."""
        self.path = Path(graph_path)
        self._wrapped = import_frozen_graph(without_control_edges(load_graph_def(self.path, trust_graph)))
        self._tensor_names = [output.name for op in self._wrapped.graph.get_operations() for output in op.outputs]

    def tensor(self, name: str, option: str = "layer"):
        """The tensor called ``name``, or the only one whose name ends with ``/name``; else a UserError naming
        ``option``, the option ``name`` came from."""
        name = tensor_name(name)
        matches = [n for n in self._tensor_names if n == name] or \
                  [n for n in self._tensor_names if n.endswith("/" + name)]
        if len(matches) != 1:
            problem = "is not a tensor of" if not matches else f"matches {len(matches)} tensors of"
            raise UserError(f"{option_value(option, name)} {problem} {self.path}; pass a full tensor name such as "
                            f"{self._example_name()}")
        return self._wrapped.graph.get_tensor_by_name(matches[0])

    def _example_name(self) -> str:
        four_d = [n for n in self._tensor_names if self._wrapped.graph.get_tensor_by_name(n).shape.rank == 4]
        return (four_d or self._tensor_names)[-1]

    def function(self, source, target) -> Callable:
        """A callable taking ``source``'s value and returning ``target``'s (tensors of this graph)."""
        return self._wrapped.prune(source, target)

    def pre_softmax(self, output):
        """The logits feeding ``output`` when it is a softmax (Grad-CAM differentiates the class score)."""
        return output.op.inputs[0] if output.op.type == "Softmax" else output

    def last_feature_map(self, output):
        """The spatial tensor nearest to ``output``: the last convolutional activations.

        Found by walking the graph backwards from ``output`` to the first
        tensor of rank 4 that is more than 1x1 (the pooled map is 1x1).
        """
        queue, seen = collections.deque([output]), {output.name}
        while queue:
            tensor = queue.popleft()
            shape = tensor.shape
            if shape.rank == 4 and (shape[1] or 0) * (shape[2] or 0) > 1:
                return tensor
            for source in tensor.op.inputs:
                if source.name not in seen:
                    seen.add(source.name)
                    queue.append(source)
        raise UserError(f"{self.path} has no convolutional layer before {output.name}; pass "
                        f"{option_name('gradcam_layer')}")


def without_control_edges(graph_def):
    """``graph_def`` with its control inputs dropped: they only order ops, and a graph that passed the check only
    computes. Keras' XLA-compiled grouped convolutions (ConvNeXt) leave a control edge from every such call to the
    graph's output, so a function from an inner tensor to the output (Grad-CAM's layer to its logits) would
    depend on the input through them and could not be pruned."""
    for node in graph_def.node:
        data_inputs = [name for name in node.input if not name.startswith("^")]
        if len(data_inputs) != len(node.input):
            del node.input[:]
            node.input.extend(data_inputs)
    return graph_def
