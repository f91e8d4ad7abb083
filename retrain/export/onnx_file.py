"""Convert a frozen classifier graph to ONNX with tf2onnx, keeping the graph's contract and names.

The ONNX file takes what the frozen graph takes: one input ``input``
``[N, H, W, 3]`` (H and W fixed from the sidecar, any batch size) holding
``(pixel - mean) / std``, and gives ``final_result``, the softmax in labels
order, plus ``unknown_score`` ``[N]`` when the model has one. tf2onnx would
name them ``input:0`` and ``final_result:0``; they are renamed to the
contract's names, so one app serves graph, TFLite and ONNX alike.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import UserError, first_line
from ..files import atomic_write
from ..graph_contract import Sidecar
from ..models.backbones import load_graph_def
from ..models.onnx_model import ONNX_READER_PACKAGES, require_packages
from ..quiet import native_output_hidden
from .tflite import output_names

ONNX_OPSET = 17  # onnxruntime 1.18+ runs it; tf2onnx 1.17 converts our graphs to it on TensorFlow 2.21
ONNX_WRITER_PACKAGES = ("tf2onnx",) + ONNX_READER_PACKAGES  # writing also checks the file with onnxruntime


def require_onnx_export(purpose: str) -> None:
    """Refuse, before any slow work, an ONNX export without the ``onnx`` extra (one line, with the pip command)."""
    require_packages(ONNX_WRITER_PACKAGES, purpose)


def convert_graph_to_onnx(graph_path: str | os.PathLike, contract: Sidecar, trust_graph: bool = False) -> bytes:
    """The serialised ONNX model of a frozen graph file fed as ``contract`` says (size, names).

    Args:
        graph_path: the frozen graph (binary GraphDef).
        contract: its sidecar: input and output names, input size, whether it has an unknown score.
        trust_graph: skip the check of the graph's ops (``graph_check``), as for the source.

    Returns:
        The ONNX ModelProto's bytes.

    Raises:
        UserError: the extra is missing, or tf2onnx cannot convert the graph.
    """
    require_onnx_export("an ONNX export")
    import tf2onnx
    graph_def = load_graph_def(Path(graph_path), trust_graph)
    names = {f"{name}:0": name for name in [contract.input_layer] + output_names(contract)}
    input_tensor = f"{contract.input_layer}:0"
    converter_log = logging.getLogger("tf2onnx")
    level = converter_log.level
    converter_log.setLevel(logging.ERROR)  # its INFO lines (optimiser passes, opset) are noise to users
    try:
        with native_output_hidden():
            model, _ = tf2onnx.convert.from_graph_def(
                graph_def, input_names=[input_tensor], output_names=list(names)[1:], opset=ONNX_OPSET,
                shape_override={input_tensor: [None, contract.input_height, contract.input_width, 3]},
                tensors_to_rename=names)
    except Exception as error:  # tf2onnx raises ValueError, KeyError, and errors from TensorFlow's importer
        raise UserError(f"cannot convert {graph_path} to ONNX ({first_line(error, 200)})") from None
    finally:
        converter_log.setLevel(level)
    return model.SerializeToString()


def write_onnx_model(graph: str | os.PathLike, output: str | os.PathLike, contract: Sidecar,
                     trust_graph: bool = False) -> Path:
    """Convert ``graph`` to ``output`` crash-safely and write ``contract`` as its sidecar; returns ``output``."""
    model = convert_graph_to_onnx(graph, contract, trust_graph)
    with atomic_write(output) as handle:
        handle.write(model)
    contract.write(output)
    return Path(output)
