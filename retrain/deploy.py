"""Convert an existing classifier graph for deployment: TFLite or SavedModel, checked against the source.

What ``scripts.export`` runs. The source may be a graph retrain wrote or one
TensorFlow-for-Poets wrote (batch 1, no sidecar); the output gets a labels
file and a sidecar beside it, so our tools and apps need no flags for it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError
from .evaluation import labelled_images
from .export import write_labels
from .export_check import CheckImages, check_export, decode_sample
from .backbones import load_graph_def, prune_graph
from .labeler import GraphConfig, GraphLabeler
from .model_file import FROZEN_GRAPH, detect_format, model_size
from .paths import atomic_write, check_writable_file
from .tflite import check_quantize_options, convert_graph, write_tflite


@dataclass
class ExportRequest:
    """The flags of ``scripts.export``."""
    graph: str
    to: str  # "tflite" or "saved_model"
    output: str
    output_labels: str | None = None
    image_dir: str | None = None
    quantize: str = "none"
    quantize_samples: int = 300
    tflite_io: str = "float"
    export_check_samples: int = 200


def export_model(source: GraphLabeler, request: ExportRequest) -> Iterator[str]:
    """Write the converted model, its labels and sidecar, check it; yields the lines to print."""
    check_quantize_options(request.quantize, request.tflite_io)
    if request.to == "saved_model" and request.quantize != "none":
        raise UserError("--quantize applies to --to tflite only; a SavedModel keeps float weights")
    for flag in ("quantize_samples", "export_check_samples"):
        if getattr(request, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(request, flag)}")
    if detect_format(request.graph) != FROZEN_GRAPH:
        raise UserError(f"--graph {request.graph} is already converted; pass the frozen graph (.pb) it came from")
    if request.quantize == "int8" and not request.image_dir:
        raise UserError("--quantize int8 calibrates on real images; pass --image_dir with a few hundred of them")
    output = Path(request.output)
    labels_path = Path(request.output_labels or output.with_suffix(".txt"))
    check_writable_file(labels_path, "--output_labels")
    config = source.config
    size = (config.input_height, config.input_width)
    paths, truths = labelled_images(request.image_dir, source.labels) if request.image_dir else ([], None)

    if request.to == "tflite":
        check_writable_file(output, "--output")
        calibration = None
        if request.quantize == "int8":
            _, calibration = decode_sample(paths, request.quantize_samples, *size)
        write_tflite(convert_graph(request.graph, size, config.input_mean, config.input_std, request.quantize,
                                   request.tflite_io, calibration, config.input_layer, config.output_layer), output)
        name = "TFLite " + ("float" if request.quantize == "none" else request.quantize)
    else:
        saved_model_from_graph(request.graph, source.config, output)
        name = "SavedModel"
    write_labels(source.labels, labels_path)
    sidecar = write_model_sidecar(output, source)

    if paths:
        index_of = {path: row for row, path in enumerate(paths)}
        checked, pixels = decode_sample(paths, request.export_check_samples, *size)
        images = CheckImages(checked, pixels, source.predict(pixels), truths[[index_of[p] for p in checked]],
                             reference_name=f"the source graph")
        result = check_export(output, name, images, source.labels, exact=request.quantize == "none",
                              reference_size=model_size(request.graph))
        yield f"Checked: {result.summary()}"
    yield f"Wrote {output}, {labels_path} and {sidecar}"


def write_model_sidecar(model_path: str | os.PathLike, source: GraphLabeler) -> Path:
    """The sidecar of a converted model: the source's settings (as label_image resolved them) and labels."""
    from .export import sidecar_path
    config = source.config
    info = {"input_layer": config.input_layer, "output_layer": config.output_layer,
            "input_height": config.input_height, "input_width": config.input_width,
            "input_mean": config.input_mean, "input_std": config.input_std, "labels": list(source.labels)}
    path = sidecar_path(model_path)
    with atomic_write(path, "w") as handle:
        json.dump(info, handle, indent=2)
        handle.write("\n")
    return path


def saved_model_from_graph(graph: str | os.PathLike, config: GraphConfig, directory: Path) -> None:
    """A SavedModel whose ``serving_default`` signature runs ``graph``: ``input`` -> ``output_layer``."""
    import tensorflow as tf
    classify = prune_graph(load_graph_def(Path(graph)), config.input_layer, config.output_layer)
    spec = tf.TensorSpec([None, config.input_height, config.input_width, 3], tf.float32, name="input")
    output_name = config.output_layer.split(":")[0]
    write_saved_model(tf.function(lambda images: {output_name: tf.identity(classify(images))},
                                  input_signature=[spec], autograph=False), directory)


def write_saved_model(serve: Callable, directory: str | os.PathLike) -> None:
    """Save ``serve`` as the ``serving_default`` signature, into a temporary folder then renamed.

    A crash leaves no half model; an existing folder that is not a SavedModel
    is refused rather than replaced.
    """
    import tensorflow as tf
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()) and not (directory / "saved_model.pb").exists():
        raise UserError(f"{directory} exists and is not a SavedModel; choose a new or empty folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    module = tf.Module()
    module.serve = serve
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        tf.saved_model.save(module, str(staging), signatures={"serving_default": serve})
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
