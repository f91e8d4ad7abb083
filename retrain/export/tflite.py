"""Convert a frozen classifier graph to TFLite: float, float16, dynamic-range or full-integer int8.

The TFLite file keeps the frozen graph's contract, so apps written for
TensorFlow-for-Poets' graphs work unchanged: one input ``input`` ``[1, H, W,
3]`` taking ``(pixel - mean) / std`` and one output ``final_result``, the
softmax in labels-file order (a model with an unknown score has a second
output tensor, ``unknown_score`` ``[1]``). int8 with float I/O keeps the
head and the unknown score in float behind an int8 backbone (``int8_tail``).
With ``uint8`` I/O (microcontrollers, Edge TPU) the model is integer
throughout: the same values are quantised with the input tensor's own scale
and zero point, the output is the softmax quantised with the output's, and
there is no unknown score.

The v1 converter reads the graph file itself: it works the same for graphs
we wrote and for graphs TensorFlow-for-Poets wrote (batch size 1 baked in).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sized

import numpy as np

from ..errors import UserError, first_line, option_name, option_value
from ..files import atomic_write
from ..graph_contract import UNKNOWN_SCORE_NAME, Sidecar
from ..models.backbones import normalize_pixels
from ..options import default
from ..quiet import native_output_hidden
from .int8_tail import convert_with_float_tail

NO_QUANTIZATION, FLOAT_IO = "none", "float"  # the defaults: a float model with float input and output
QUANTIZE_MODES = (NO_QUANTIZATION, "float16", "dynamic", "int8")
TFLITE_IO_TYPES = (FLOAT_IO, "uint8")
DEFAULT_QUANTIZE_SAMPLES = default("quantize_samples")
MIN_CALIBRATION_IMAGES = 10  # fewer cannot estimate activation ranges; int8 accuracy would collapse


def check_quantize_options(quantize: str, tflite_io: str) -> None:
    """Refuse impossible combinations before any slow work."""
    if quantize not in QUANTIZE_MODES:
        raise UserError(f"{option_value('quantize', repr(quantize))} is unknown; use one of "
                        f"{', '.join(QUANTIZE_MODES)}")
    if tflite_io not in TFLITE_IO_TYPES:
        raise UserError(f"{option_value('tflite_io', repr(tflite_io))} is unknown; use one of "
                        f"{', '.join(TFLITE_IO_TYPES)}")
    if tflite_io != FLOAT_IO and quantize != "int8":
        raise UserError(f"{option_value('tflite_io', repr(tflite_io))} needs {option_value('quantize', repr('int8'))}: "
                        f"only a full-integer model has integer input and output")


def check_calibration(images: Sized) -> None:
    """int8 needs real images to measure activation ranges on (decoded ones, or usable paths ahead of time)."""
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise UserError(f"{option_value('quantize', repr('int8'))} needs at least {MIN_CALIBRATION_IMAGES} readable "
                        f"calibration images, found {len(images)}; add images to {option_name('image_dir')} or raise "
                        f"{option_name('quantize_samples')}")


def keeps_float_tail(quantize: str, tflite_io: str) -> bool:
    """Whether an int8 file keeps the head and the unknown score in float (see ``int8_tail``): with float I/O.

    ``uint8`` I/O is for integer-only hardware (Edge TPU, microcontrollers without a float unit), where a float
    tail would not run: those files stay integer throughout, without the unknown score.
    """
    return quantize == "int8" and tflite_io == FLOAT_IO


def output_names(contract: Sidecar) -> list[str]:
    """The graph's outputs the TFLite file keeps, in order: the softmax, then ``unknown_score`` if the model has it."""
    return [contract.output_layer] + ([UNKNOWN_SCORE_NAME] if contract.unknown_threshold is not None else [])


def convert_graph(graph_path: str | os.PathLike, contract: Sidecar, quantize: str = NO_QUANTIZATION,
                  tflite_io: str = FLOAT_IO, calibration: np.ndarray | None = None) -> bytes:
    """The TFLite flatbuffer for a frozen graph file fed as ``contract`` says (size, names, mean, std).

    ``calibration`` (uint8 RGB images at the input size) is required for
    ``int8``: they are normalised exactly as the input takes them and fed one
    at a time as the representative dataset.
    """
    import tensorflow as tf
    check_quantize_options(quantize, tflite_io)
    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(graph_path), [contract.input_layer], output_names(contract),
        {contract.input_layer: [1, contract.input_height, contract.input_width, 3]})
    if quantize != NO_QUANTIZATION:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if calibration is None:
            raise ValueError("int8 conversion needs calibration images")
        check_calibration(calibration)
        converter.representative_dataset = lambda: _representative(calibration, contract.input_mean,
                                                                   contract.input_std)
        if tflite_io == "uint8":  # integers throughout, as integer-only targets need: the unknown score cannot stay
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.uint8
    try:
        with native_output_hidden():
            if keeps_float_tail(quantize, tflite_io):
                return convert_with_float_tail(converter, contract.feature_size, converter.representative_dataset)
            return converter.convert()
    except Exception as error:  # the converter raises ConverterError, ValueError and others from C++
        raise UserError(f"cannot convert {graph_path} to TFLite ({first_line(error, 200)})") from None


def _representative(pixels: np.ndarray, mean: float, std: float) -> Iterator[list[np.ndarray]]:
    for image in pixels:
        yield [normalize_pixels(image[np.newaxis].astype(np.float32), mean, std)]


def write_tflite(model: bytes, path: str | os.PathLike) -> Path:
    """Write the flatbuffer crash-safely (temporary name, then rename)."""
    with atomic_write(path) as handle:
        handle.write(model)
    return Path(path)


def tflite_name(quantize: str) -> str:
    """How reports call a TFLite file: ``TFLite float``, ``TFLite int8``, ..."""
    return "TFLite " + ("float" if quantize == NO_QUANTIZATION else quantize)
