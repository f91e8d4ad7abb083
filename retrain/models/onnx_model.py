"""ONNX files as a ``Model``, run by onnxruntime, their operators checked first (``graph_check.check_onnx_model``).

An ONNX file we write keeps the frozen graph's contract (``graph_contract``):
input ``input`` ``[N, H, W, 3]`` taking ``(pixel - mean) / std``, output
``final_result``, and ``unknown_score`` when the model has one. The packages
are an extra (``pip install 'retrain[onnx]'``); without them, anything that
needs them fails at once with that command, never after training.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError, first_line
from ..graph_contract import UNKNOWN_SCORE_NAME
from .backbones import normalize_pixels
from .graph_check import check_onnx_model
from .model_base import FORMATS_HINT, BatchRefused, Model, Normalization, Outputs, input_size_advice

ONNX = "ONNX"
ONNX_INSTALL = "pip install 'retrain[onnx]'"
ONNX_READER_PACKAGES = ("onnx", "onnxruntime")  # what reading needs; writing also needs tf2onnx
# An ONNX ModelProto starts with its first field, ir_version (field 1, a varint): byte 0x08. A GraphDef never does:
# its field 1 (node) is length-delimited (0x0a), and its other fields are 2, 3 and 4.
ONNX_FIRST_BYTE = 0x08


def is_onnx(head: bytes) -> bool:
    """Whether a file starting with ``head`` is an ONNX model (by content, as every format is detected)."""
    return head[:1] == bytes([ONNX_FIRST_BYTE])


def require_packages(packages: Sequence[str], purpose: str) -> None:
    """Refuse, in one line with the install command, when any of ``packages`` is not installed.

    Args:
        packages: import names, e.g. ``("onnx", "onnxruntime")``.
        purpose: what needs them, the start of the message (e.g. ``"--output_onnx"``).

    Raises:
        UserError: some are missing.
    """
    missing = [package for package in packages if importlib.util.find_spec(package) is None]
    if missing:
        raise UserError(f"{purpose} needs {' and '.join(missing)}, not installed: {ONNX_INSTALL}")


class OnnxModel(Model):
    """An ONNX file run by onnxruntime on the CPU; a fixed batch size of 1 falls back to one image at a time."""
    format = ONNX

    def __init__(self, path: Path, num_threads: int | None = None, trust_graph: bool = False):
        require_packages(ONNX_READER_PACKAGES, f"reading the ONNX file {path}")
        import onnx
        import onnxruntime
        try:
            proto = onnx.load_model_from_string(Path(path).read_bytes())
        except Exception as error:  # protobuf's DecodeError family, or onnx's own
            raise UserError(f"{path} looks like an ONNX file but cannot be read ({type(error).__name__}); "
                            f"pass {FORMATS_HINT}") from None
        if not trust_graph:
            check_onnx_model(proto, path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings would look like failures to users
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self._session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail, InvalidGraph, ... (all plain Exceptions)
            raise UserError(f"{path} looks like an ONNX file but cannot be loaded "
                            f"({first_line(error)}); pass {FORMATS_HINT}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        probabilities = [output.name for output in outputs if output.name != UNKNOWN_SCORE_NAME]
        has_unknown = len(probabilities) < len(outputs)
        if len(inputs) != 1 or len(probabilities) != 1 or len(inputs[0].shape) != 4:
            raise UserError(f"{path} is an ONNX model but not an image classifier with one image input and one "
                            f"output (besides {UNKNOWN_SCORE_NAME}); pass {FORMATS_HINT}")
        shape = inputs[0].shape  # dimensions are ints when fixed, names (or None) when free
        fixed = isinstance(shape[1], int) and isinstance(shape[2], int)
        super().__init__(path, (shape[1], shape[2]) if fixed else None, has_unknown)
        self._input = inputs[0].name
        self._outputs = probabilities + ([UNKNOWN_SCORE_NAME] if has_unknown else [])
        self.batched = not isinstance(shape[0], int) or shape[0] != 1

    def _call(self, images: np.ndarray, normalization: Normalization) -> Outputs:
        if normalization is not None:
            images = normalize_pixels(images.astype(np.float32), *normalization)
        try:
            answers = self._session.run(self._outputs, {self._input: images.astype(np.float32)})
        except Exception as error:  # onnxruntime's InvalidArgument, Fail, RuntimeException
            if len(images) > 1:
                raise BatchRefused() from None
            raise UserError(f"the {self.format} {self.path} rejects {images.shape[1]}x{images.shape[2]} input "
                            f"({first_line(error)}); {input_size_advice()}") from None
        return answers[0], answers[1] if self.has_unknown_score else None

