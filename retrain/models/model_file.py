"""Open a classifier model file of any format we write, behind one small interface.

A frozen graph (binary GraphDef ``.pb``), a SavedModel folder, a TFLite
flatbuffer and an ONNX file (``onnx_model``) all become a ``Model``: normalised float images ``[N, H, W, 3]``
in, probabilities ``[N, C]`` out, and the unknown score ``[N]`` too when the
model has that second output (``graph_contract.UNKNOWN_SCORE_NAME``). The format is decided by content, never by
the file name: users rename files, and a ``.pb`` that is really a TFLite
model must not fail with a protobuf error. ``load_model`` is the one entry
point, so the check of what a model may contain (``graph_check``: pure
computation only, unless ``trust_graph``) runs in one place, for every format,
before anything executes it.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError, first_line, option_value
from ..graph_contract import FINAL_TENSOR_NAME, INPUT_NAME, SERVING_SIGNATURE, UNKNOWN_SCORE_NAME
from ..quiet import native_output_hidden
from .backbones import load_graph_def, normalize_pixels, prune_graph
from .graph_check import check_graph_def, check_saved_model, check_tflite_ops
from .model_base import FORMATS_HINT, BatchRefused, Model, Normalization, Outputs, input_size_advice
from .onnx_model import ONNX, OnnxModel, is_onnx

FROZEN_GRAPH, SAVED_MODEL, TFLITE = "frozen graph", "SavedModel", "TFLite"
TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8 of every TFLite model


def detect_format(path: str | os.PathLike) -> str:
    """``FROZEN_GRAPH``, ``SAVED_MODEL``, ``TFLITE`` or ``ONNX``, from what ``path`` holds."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return SAVED_MODEL
        raise UserError(f"{option_value('graph', path)} is a folder but not a SavedModel (no saved_model.pb); "
                        f"pass {FORMATS_HINT}")
    if not path.is_file():
        raise UserError(f"{option_value('graph', path)} does not exist; pass {FORMATS_HINT}")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] == TFLITE_IDENTIFIER:
        return TFLITE
    return ONNX if is_onnx(head) else FROZEN_GRAPH


# what TensorFlow's own TFLite interpreter warns on every use (see tflite_interpreter)
INTERPRETER_DEPRECATION = r"(?s).*tf\.lite\.Interpreter is deprecated"


def tflite_interpreter(model_path: str | os.PathLike, num_threads: int | None = None):
    """The TFLite interpreter: this function alone decides which runtime runs TFLite files.

    LiteRT (the ``ai-edge-litert`` package) is TensorFlow's maintained runtime;
    TensorFlow 2.21's own ``tf.lite.Interpreter`` still works but warns on
    every use that it is deprecated. Use LiteRT when it is installed, else
    TensorFlow's, without the warning (it would look like an error to users).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=INTERPRETER_DEPRECATION)
        try:
            with native_output_hidden():
                interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
                interpreter.allocate_tensors()
                return interpreter
        except (ValueError, RuntimeError) as error:
            raise UserError(f"{model_path} looks like a TFLite file but cannot be loaded "
                            f"({first_line(error)}); pass {FORMATS_HINT}") from None


class TensorFlowModel(Model):
    """A frozen graph or SavedModel signature, run as one compiled TensorFlow function.

    ``classify`` returns the probabilities, or with ``has_unknown_score`` the pair (probabilities, unknown scores).
    """

    def __init__(self, path: Path, format_name: str, classify: Callable, input_size: tuple[int, int] | None,
                 has_unknown_score: bool = False):
        super().__init__(path, input_size, has_unknown_score)
        self.format = format_name
        self._classify = classify
        self._from_pixels: dict[tuple[float, float], Callable] = {}

    def _pixels_function(self, normalization: tuple[float, float]) -> Callable:
        """uint8 pixels -> probabilities, normalised inside the compiled function."""
        import tensorflow as tf
        if normalization not in self._from_pixels:
            mean, std = normalization
            # One trace for every batch size: each retrace re-optimises the whole graph (a quarter second).
            self._from_pixels[normalization] = tf.function(
                lambda pixels: self._classify(normalize_pixels(tf.cast(pixels, tf.float32), mean, std)),
                input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)
        return self._from_pixels[normalization]

    def _call(self, images: np.ndarray, normalization: Normalization) -> Outputs:
        import tensorflow as tf
        try:
            if normalization is None:
                outputs = self._classify(tf.constant(images, tf.float32))
            else:
                outputs = self._pixels_function(normalization)(tf.constant(images, tf.uint8))
            if self.has_unknown_score:  # classify gives (probabilities, scores)
                return outputs[0].numpy(), outputs[1].numpy()
            return outputs.numpy(), None
        except (TypeError, ValueError):  # raised while tracing: a fixed batch size 1, or another image size
            if len(images) > 1:
                raise BatchRefused() from None
            raise UserError(f"the {self.format} {self.path} does not take {images.shape[1]}x{images.shape[2]} "
                            f"images; {input_size_advice()}") from None
        except tf.errors.InvalidArgumentError as error:
            if len(images) == 1:
                raise UserError(f"the {self.format} {self.path} rejects {images.shape[1]}x{images.shape[2]} input "
                                f"({first_line(error)}); {input_size_advice()}") from None
            raise BatchRefused() from None
        except tf.errors.OpError as error:  # a damaged graph that imports but cannot run (found by fuzzing)
            raise UserError(f"the {self.format} {self.path} cannot run ({type(error).__name__}: "
                            f"{first_line(error)}); pass a model written by retrain or "
                            f"TensorFlow-for-Poets") from None


class TFLiteModel(Model):
    """A TFLite flatbuffer; integer input/output is (de)quantised with the tensors' own scale and zero point."""
    format = TFLITE

    def __init__(self, path: Path, num_threads: int | None = None, trust_graph: bool = False):
        self._interpreter = tflite_interpreter(path, num_threads)
        if not trust_graph:  # both runtimes list operators only through this (private) method
            operators = self._interpreter._get_ops_details()
            check_tflite_ops(((op["op_name"], f"operator {op['index']}") for op in operators), path)
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        scores = [detail for detail in outputs if detail["name"] == UNKNOWN_SCORE_NAME]
        probabilities = [detail for detail in outputs if detail["name"] != UNKNOWN_SCORE_NAME]
        if len(inputs) != 1 or len(probabilities) != 1 or len(inputs[0]["shape"]) != 4:
            raise UserError(f"{path} is a TFLite model but not an image classifier with one image input and one "
                            f"output (besides {UNKNOWN_SCORE_NAME}); pass {FORMATS_HINT}")
        self._input, self._output = inputs[0], probabilities[0]
        self._unknown = scores[0] if scores else None
        super().__init__(path, (int(self._input["shape"][1]), int(self._input["shape"][2])), bool(scores))
        self._shape = tuple(self._input["shape"])

    def _call(self, images: np.ndarray, normalization: Normalization) -> Outputs:
        if normalization is not None:
            images = normalize_pixels(images.astype(np.float32), *normalization)
        interpreter, index = self._interpreter, self._input["index"]
        if images.shape != self._shape:
            try:
                self._shape = None  # a failed allocation leaves the input resized: the next call must resize again
                interpreter.resize_tensor_input(index, images.shape, strict=False)
                interpreter.allocate_tensors()
            except (ValueError, RuntimeError):
                if len(images) > 1:
                    raise BatchRefused() from None
                raise
            self._shape = images.shape
        interpreter.set_tensor(index, quantize(images, self._input))
        try:
            interpreter.invoke()
        except RuntimeError:  # a reshape inside the model fixes batch size 1
            if len(images) > 1:
                raise BatchRefused() from None
            raise
        scores = None if self._unknown is None else dequantize(interpreter.get_tensor(self._unknown["index"]),
                                                               self._unknown)
        return dequantize(interpreter.get_tensor(self._output["index"]), self._output), scores


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float values as the tensor's integer type: ``round(value / scale + zero_point)``, clipped; floats pass."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """The tensor's values as float32: ``(value - zero_point) * scale`` for integer tensors."""
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def _load_frozen_graph(path: Path, input_layer: str, output_layer: str, trust_graph: bool) -> Model:
    try:
        graph_def = load_graph_def(path, trust_graph=True)  # parse only: a parse error means "not a model"
    except UserError:
        raise UserError(f"{option_value('graph', path)} is none of the model formats we read; "
                        f"pass {FORMATS_HINT}") from None
    if not trust_graph:
        check_graph_def(graph_def, path)
    placeholder = next((node for node in graph_def.node if node.name == input_layer.split(":")[0]), None)
    dims = [dim.size for dim in placeholder.attr["shape"].shape.dim] if placeholder is not None else []
    size = (dims[1], dims[2]) if len(dims) == 4 and dims[1] > 0 and dims[2] > 0 else None
    import tensorflow as tf
    has_unknown = any(node.name == UNKNOWN_SCORE_NAME for node in graph_def.node)
    outputs = (output_layer, UNKNOWN_SCORE_NAME) if has_unknown else output_layer
    classify = tf.function(prune_graph(graph_def, input_layer, outputs), autograph=False, reduce_retracing=True)
    return TensorFlowModel(path, FROZEN_GRAPH, classify, size, has_unknown)


def _load_saved_model(path: Path, output_layer: str, trust_graph: bool) -> Model:
    import tensorflow as tf
    if not trust_graph:
        check_saved_model(path)
    try:
        signature = tf.saved_model.load(str(path)).signatures[SERVING_SIGNATURE]
    except (KeyError, OSError, ValueError) as error:
        raise UserError(f"cannot load the SavedModel {path} ({first_line(error)}); it needs a "
                        f"'{SERVING_SIGNATURE}' signature from images to probabilities") from None
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or not outputs:
        raise UserError(f"the SavedModel {path} signature '{SERVING_SIGNATURE}' must take one image input")
    (input_name, spec), = inputs.items()
    others = [name for name in outputs if name != UNKNOWN_SCORE_NAME] or list(outputs)
    output_name = output_layer if output_layer in outputs else others[0]
    shape = spec.shape.as_list()
    size = (shape[1], shape[2]) if len(shape) == 4 and shape[1] and shape[2] else None
    has_unknown_score = UNKNOWN_SCORE_NAME in outputs and output_name != UNKNOWN_SCORE_NAME

    def classify(images):
        answer = signature(**{input_name: images})
        return (answer[output_name], answer[UNKNOWN_SCORE_NAME]) if has_unknown_score else answer[output_name]
    return TensorFlowModel(path, SAVED_MODEL, classify, size, has_unknown_score)


def load_model(path: str | os.PathLike, input_layer: str = INPUT_NAME, output_layer: str = FINAL_TENSOR_NAME,
               num_threads: int | None = None, trust_graph: bool = False) -> Model:
    """Open ``path`` as whichever format its content is, its ops checked first unless ``trust_graph``.

    Tensor names only matter for frozen graphs and SavedModels.
    """
    path = Path(path)
    return LOADERS[detect_format(path)](path, input_layer, output_layer, num_threads, trust_graph)


# How each format opens: (path, input layer, output layer, threads, trust_graph) -> Model.
LOADERS: dict[str, Callable[[Path, str, str, int | None, bool], Model]] = {
    FROZEN_GRAPH: lambda path, input_layer, output_layer, _, trust: _load_frozen_graph(path, input_layer,
                                                                                       output_layer, trust),
    SAVED_MODEL: lambda path, _, output_layer, __, trust: _load_saved_model(path, output_layer, trust),
    TFLITE: lambda path, _, __, threads, trust: TFLiteModel(path, threads, trust),
    ONNX: lambda path, _, __, threads, trust: OnnxModel(path, threads, trust),
}


def model_size(path: str | os.PathLike) -> int:
    """Bytes on disk: the file, or everything in a SavedModel folder."""
    path = Path(path)
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size
