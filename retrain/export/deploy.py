"""Deployable files beside the frozen graph: TFLite, SavedModel and ONNX, each checked before it is announced.

Shared by retrain (``--output_tflite``, ``--saved_model_dir``, ``--output_onnx``) and
``scripts.export``, which converts a graph that already exists, including
one TensorFlow-for-Poets wrote (batch size 1, no sidecar). Every written
model gets a sidecar beside it, so ``label_image`` and apps need no flags.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..data.decode import LABEL_BATCH_SIZE, decode_sample
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from ..errors import UserError, option_name, option_value
from ..files import check_writable_file
from ..graph_contract import Sidecar, sidecar_path
from ..label.evaluation import labelled_images
from ..label.labeler import GraphLabeler
from ..models.model_file import FROZEN_GRAPH, ONNX, SAVED_MODEL, detect_format, model_size
from .check import DEFAULT_EXPORT_CHECK_SAMPLES, CheckImages, ExportCheck, check_export
from .frozen_graph import saved_model_from_graph, write_labels
from .onnx_file import require_onnx_export, write_onnx_model
from .tflite import (
    DEFAULT_QUANTIZE_SAMPLES,
    FLOAT_IO,
    NO_QUANTIZATION,
    check_quantize_options,
    convert_graph,
    keeps_float_tail,
    tflite_name,
    write_tflite,
)


def check_export_options(quantize: str, tflite_io: str, quantize_samples: int, export_check_samples: int) -> None:
    """Refuse impossible export flags before any slow work."""
    check_quantize_options(quantize, tflite_io)
    for option, value in (("quantize_samples", quantize_samples), ("export_check_samples", export_check_samples)):
        if value < 1:
            raise UserError(f"{option_name(option)} must be at least 1, got {value}")


def write_tflite_model(graph: str | os.PathLike, output: str | os.PathLike, contract: Sidecar, quantize: str,
                       tflite_io: str, calibration_paths: Sequence[Path], quantize_samples: int,
                       max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS) -> Path:
    """Convert ``graph`` to ``output`` and write ``contract`` as its sidecar; int8 calibrates on the paths."""
    calibration = None
    if quantize == "int8":
        if not keeps_float_tail(quantize, tflite_io):
            # Integer arithmetic collapses the unknown score (every image scored 0 on the tiny test model): an
            # integer-only file carries the softmax only, and its sidecar says so.
            contract = dataclasses.replace(contract, unknown_threshold=None)
        _, calibration = decode_sample(calibration_paths, quantize_samples, contract.input_height,
                                       contract.input_width, max_megapixels=max_megapixels)
    write_tflite(convert_graph(graph, contract, quantize, tflite_io, calibration), output)
    contract.write(output)
    return Path(output)


def check_images(paths: Sequence[Path], truths: np.ndarray | None, count: int, contract: Sidecar,
                 reference: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None]],
                 reference_name: str, max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS,
                 logit_error: Callable[[np.ndarray], np.ndarray] | None = None,
                 unknown_error: Callable[[np.ndarray], np.ndarray] | None = None) -> CheckImages:
    """Up to ``count`` of ``paths`` decoded, with the reference model's probabilities on them.

    ``reference(positions in paths, uint8 pixels)`` gives the probabilities and the unknown scores (None for a
    model without them) in one pass, from the pixels (a source graph) or from what is already known about those
    images (the trained head on their cached bottlenecks), in which case ``logit_error(positions)`` and
    ``unknown_error(positions)`` say how far those answers may be off (see ``CheckImages``).
    """
    checked, pixels = decode_sample(paths, count, contract.input_height, contract.input_width,
                                    max_megapixels=max_megapixels)
    row_of = {path: row for row, path in enumerate(paths)}
    positions = np.array([row_of[path] for path in checked], dtype=np.int64)
    if truths is not None:
        truths = truths[positions]
    batches = [(positions[i:i + LABEL_BATCH_SIZE], pixels[i:i + LABEL_BATCH_SIZE])
               for i in range(0, len(pixels), LABEL_BATCH_SIZE)]
    empty = np.zeros((0, len(contract.labels)))
    answered = [reference(*batch) for batch in batches]
    answers = np.concatenate([probabilities for probabilities, _ in answered] or [empty])
    errors = None if logit_error is None else np.concatenate([logit_error(batch[0]) for batch in batches] or [empty])
    with_scores = bool(answered) and answered[0][1] is not None
    scores = np.concatenate([score for _, score in answered]) if with_scores else None
    score_errors = (None if unknown_error is None else
                    np.concatenate([unknown_error(batch[0]) for batch in batches] or [np.zeros(0)]))
    return CheckImages(checked, pixels, answers, truths, reference_name, errors, scores, score_errors)


def check_exports(artifacts: Sequence[tuple[Path, str, bool]], images: CheckImages, labels: Sequence[str],
                  reference_size: int, trust_graph: bool = False) -> list[ExportCheck]:
    """Check each ``(path, name, is float)``; the first float file that disagrees raises ``ExportMismatch``."""
    return [check_export(path, name, images, labels, exact, reference_size, trust_graph)
            for path, name, exact in artifacts]


@dataclass
class ExportRequest:
    """The flags of ``scripts.export``."""
    graph: str
    to: str  # "tflite", "saved_model" or "onnx"
    output: str
    output_labels: str = ""  # "": the output's name with .txt
    image_dir: str = ""  # "": convert without checking or calibrating
    quantize: str = NO_QUANTIZATION
    quantize_samples: int = DEFAULT_QUANTIZE_SAMPLES
    tflite_io: str = FLOAT_IO
    export_check_samples: int = DEFAULT_EXPORT_CHECK_SAMPLES
    trust_graph: bool = False
    max_image_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS

    def __post_init__(self) -> None:
        """Flag mistakes show at once, before TensorFlow's slow start-up and the graph's loading."""
        check_export_options(self.quantize, self.tflite_io, self.quantize_samples, self.export_check_samples)
        if self.to != "tflite" and self.quantize != NO_QUANTIZATION:
            raise UserError(f"{option_name('quantize')} applies to {option_value('to', repr('tflite'))} only; "
                            f"{option_value('to', repr(self.to))} keeps float weights")
        if self.to == "onnx":
            require_onnx_export(option_value("to", repr("onnx")))
        if detect_format(self.graph) != FROZEN_GRAPH:
            raise UserError(f"{option_value('graph', self.graph)} is already converted; pass the frozen graph (.pb) "
                            f"it came from")
        if self.quantize == "int8" and not self.image_dir:
            raise UserError(f"{option_value('quantize', repr('int8'))} calibrates on real images; pass "
                            f"{option_name('image_dir')} with a few hundred of them")


def export_model(source: GraphLabeler, request: ExportRequest) -> Iterator[str]:
    """Convert ``request.graph``, write its labels and sidecar, check it on --image_dir; yields lines to print."""
    output = Path(request.output)
    labels_path = Path(request.output_labels or output.with_suffix(".txt"))
    check_writable_file(labels_path, "output_labels")
    contract = dataclasses.replace(source.config, labels=list(source.labels))
    paths, truths = labelled_images(request.image_dir, source.labels) if request.image_dir else ([], None)

    if request.to == "tflite":
        check_writable_file(output, "output")
        write_tflite_model(request.graph, output, contract, request.quantize, request.tflite_io, paths,
                           request.quantize_samples, request.max_image_megapixels)
        name = tflite_name(request.quantize)
    elif request.to == "onnx":
        check_writable_file(output, "output")
        write_onnx_model(request.graph, output, contract, request.trust_graph)
        name = ONNX
    else:
        saved_model_from_graph(request.graph, contract, output, request.trust_graph)
        contract.write(output)
        name = SAVED_MODEL
    write_labels(source.labels, labels_path)

    if paths:
        normalization = (source.config.input_mean, source.config.input_std)
        images = check_images(paths, truths, request.export_check_samples, contract,
                              lambda _, pixels: source.model.predict_with_unknown(pixels, normalization),
                              "the source graph", request.max_image_megapixels)
        for check in check_exports([(output, name, request.quantize == NO_QUANTIZATION)], images, source.labels,
                                   model_size(request.graph), request.trust_graph):
            yield f"Checked {check.summary()}"
    yield f"Wrote {output}, {labels_path} and {sidecar_path(output)}"
