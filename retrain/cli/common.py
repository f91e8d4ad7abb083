"""What every command-line script shares, so no script imports another.

``run_cli`` turns a ``UserError`` into one ``error: ...`` line and exit code 2
(never a traceback); ``add_graph_arguments`` and ``load_labeler`` are the
flags and loading of every tool that runs a retrained graph; ``default_of``
reads a flag's default from the options dataclass it fills, so each default
is written once, in the library.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import gc
import os
import sys
import typing
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from retrain.models.architectures import DEFAULT_ARCHITECTURE, ArchitectureSpec, get_architecture, tfhub_spec
from retrain.errors import (EXIT_EXPORT_MISMATCH, EXIT_INTERRUPTED, EXIT_USER_ERROR, ExportMismatch, UserError,
                            command_line_spelling)
from retrain.graph_contract import Sidecar
from retrain.data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from retrain.quiet import silence_tensorflow_startup

if TYPE_CHECKING:
    from retrain.explain.gradcam import GradCam
    from retrain.label.labeler import GraphLabeler


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Run a script's ``main`` and exit; user errors and failed export checks become one stderr line."""
    silence_tensorflow_startup()
    # Python's last garbage collection walks every object still alive, and TensorFlow makes millions: it
    # took 0.4 s of every command. Frozen at exit, they are skipped. Nothing is lost: every output is
    # closed before main returns, and atexit handlers registered later (logging, multiprocessing) run first.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 (an old archive's) must print, not crash the run.
        stream.reconfigure(errors="backslashreplace")
    try:
        with command_line_spelling():  # the library's messages name --flags, as the user typed them
            code = main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except ExportMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        code = EXIT_EXPORT_MISMATCH
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun to continue", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code or 0)


def default_of(options_class: type, name: str) -> Any:
    """The default of the dataclass field ``name``: where every flag's default is written.

    A float field's default comes back as a float even when written ``10``, so
    the flag ``add_flags`` makes from it takes ``7.5``.
    """
    for option in dataclasses.fields(options_class):
        if option.name == name:
            if option.default_factory is not dataclasses.MISSING:
                return option.default_factory()
            if typing.get_type_hints(options_class)[name] is float and option.default is not None:
                return float(option.default)
            return option.default
    raise KeyError(f"{options_class.__name__} has no field {name}")


def add_flags(parser: argparse.ArgumentParser, groups: dict[str, dict[str, str]], defaults: dict[str, Any],
              choices: dict[str, Sequence[str]] | None = None) -> None:
    """Add ``{group title: {flag: help}}`` to ``parser``, each flag with its default from ``defaults``.

    The type comes from the default (None means a whole number, as for a
    seed), a default of False makes a switch, ``choices`` limits a flag's
    values, and the help ends with the default unless it already speaks of it
    or there is nothing to show.
    """
    for title, flags in groups.items():
        group = parser.add_argument_group(title)
        for flag, help_text in flags.items():
            default = defaults[flag]
            if default is False:
                group.add_argument(flag, action="store_true", help=help_text)
                continue
            if "default" not in help_text and default not in ("", None):
                help_text += " (default %(default)s)"
            group.add_argument(flag, type=int if default is None else type(default), default=default, help=help_text,
                               choices=(choices or {}).get(flag))


# The flags every tool that decodes images or runs a graph has: retrain, label_image, relabel, evaluate.
HOSTILE_INPUT_HELP = {
    "--max_image_megapixels": "Skip, with a warning, any image whose header says it would decode to more "
                              "pixels than this, so a decompression bomb cannot exhaust memory. JPEGs count the "
                              "pixels decoded at reduced scale: 100+ megapixel photos work.",
    "--trust_graph": "Run a graph (or TF-Hub module) even if it holds ops that do more than compute, such as "
                     "reading or writing files or running Python. Only for models from a source you trust.",
}
HOSTILE_INPUT_DEFAULTS = {"--max_image_megapixels": DEFAULT_MAX_IMAGE_MEGAPIXELS, "--trust_graph": False}

# The flags of every script that runs a backbone (retrain, extract_bottlenecks), read by ``backbone_spec``.
BACKBONE_HELP = {
    "--architecture": "Pretrained network to build on. mobilenet_<1.0|0.75|0.50|0.25>_<224|192|160|128>"
                      "[_quantized] are small and fast; bigger ones (inception_v3, inception_v4, mobilenetv2, "
                      "resnet50, vgg16) can be more accurate but are slower. --list_architectures shows all. "
                      f"(default {DEFAULT_ARCHITECTURE}, bundled, works offline)",
    "--tfhub_module": "Use a TF-Hub image feature-vector module instead of --architecture: a URL or the "
                      "folder of a downloaded SavedModel. Images are fed as floats in [0, 1].",
    "--tfhub_image_size": "Input height and width of the --tfhub_module.",
    "--model_dir": "Where backbone files are downloaded to and looked for. A file "
                   "already there is used without touching the network. "
                   "(default: the project's models/)",
}
# The flags of every script that fills the bottleneck cache.
BOTTLENECK_HELP = {
    "--bottleneck_dir": "Where bottleneck vectors are cached, per architecture and image content: an edited "
                        "image is recomputed, a renamed one is not. (default: the project's bottlenecks/)",
    "--bottleneck_batch_size": "Images per backbone call while computing bottlenecks. (default %(default)s; "
                               "32 was slower for MobileNet on a 2-core CPU, see benchmarks/README.md)",
}


def backbone_spec(args: argparse.Namespace) -> ArchitectureSpec:
    """The registry row (or TF-Hub module) that ``BACKBONE_HELP``'s flags name."""
    return tfhub_spec(args.tfhub_module, args.tfhub_image_size) if args.tfhub_module else \
        get_architecture(args.architecture)


def add_graph_arguments(parser: argparse.ArgumentParser, graph_required: bool = True, labels_images: bool = True) -> None:
    """--graph, --labels, the input overrides a Poets graph needs and the hostile-input flags.

    A tool that runs a graph without labelling images (``labels_images``
    False: visualize_filters) gets neither --labels nor the pixel budget.
    """
    poets = Sidecar()  # what a graph without a sidecar is assumed to take: Poets' label_image defaults
    parser.add_argument("--graph", required=graph_required,
                        help="Model to use: a frozen graph (.pb, e.g. the --output_graph of retrain), a SavedModel "
                             "folder or a .tflite file, told apart by content.")
    if labels_images:
        parser.add_argument("--labels", default=None,
                            help="Labels file, one per line. Optional when the graph has its JSON sidecar.")
    override = parser.add_argument_group("graph input (read from the sidecar when present; Poets' defaults otherwise)")
    override.add_argument("--input_layer", default=None, help=f"Input tensor name. (Poets default: {poets.input_layer})")
    override.add_argument("--output_layer", default=None,
                          help=f"Output tensor name. (Poets default: {poets.output_layer})")
    override.add_argument("--input_height", type=int, default=None,
                          help=f"Input height. (Poets default: {poets.input_height})")
    override.add_argument("--input_width", type=int, default=None,
                          help=f"Input width. (Poets default: {poets.input_width})")
    override.add_argument("--input_mean", type=float, default=None,
                          help=f"Subtracted from each pixel value. (Poets default: {poets.input_mean:g})")
    override.add_argument("--input_std", type=float, default=None,
                          help=f"Pixel values are divided by this after the mean. (Poets default: {poets.input_std:g})")
    hostile = HOSTILE_INPUT_HELP if labels_images else {"--trust_graph": HOSTILE_INPUT_HELP["--trust_graph"]}
    add_flags(parser, {"hostile inputs": hostile}, HOSTILE_INPUT_DEFAULTS)


def add_gradcam_layer_argument(parser: argparse.ArgumentParser) -> None:
    """--gradcam_layer, for every tool that draws Grad-CAM maps."""
    parser.add_argument("--gradcam_layer", default=None,
                        help="Convolutional layer Grad-CAM explains: a block name of the graph's backbone or a "
                             "tensor name. (default: the backbone's last block; for a graph without sidecar, the "
                             "last tensor with a spatial map before the output)")


def load_gradcam(args: argparse.Namespace, labeler: GraphLabeler) -> GradCam:
    """Grad-CAM for the graph ``labeler`` runs, on the layer ``--gradcam_layer`` names."""
    from retrain.explain.gradcam import GradCam
    from retrain.models.model_file import FROZEN_GRAPH
    if labeler.model.format != FROZEN_GRAPH:  # it differentiates through the GraphDef's own tensors
        raise UserError(f"Grad-CAM needs a frozen graph (.pb) and --graph {args.graph} is a {labeler.model.format}; "
                        f"pass the frozen graph it was converted from")
    return GradCam.for_graph(args.graph, labeler.config, args.gradcam_layer, trust_graph=args.trust_graph,
                             max_image_megapixels=labeler.max_image_megapixels)


def warn_if_trusted(args: argparse.Namespace, graph: str | os.PathLike) -> None:
    if args.trust_graph:
        print(f"warning: --trust_graph: running {graph} without checking its ops", file=sys.stderr)


def load_labeler(args: argparse.Namespace) -> GraphLabeler:
    """The GraphLabeler the flags of ``add_graph_arguments`` describe (imports TensorFlow)."""
    from retrain.label.labeler import GraphLabeler
    warn_if_trusted(args, args.graph)
    return GraphLabeler(args.graph, args.labels, trust_graph=args.trust_graph,
                        max_image_megapixels=args.max_image_megapixels, input_layer=args.input_layer,
                        output_layer=args.output_layer, input_height=args.input_height,
                        input_width=args.input_width, input_mean=args.input_mean, input_std=args.input_std)
