"""What every command-line script shares, so no script imports another.

``run_cli`` turns a ``UserError`` into one ``error: ...`` line and exit code 2
(never a traceback); ``add_options`` builds a tool's flags from the one
declaration of every option, ``retrain.options``; ``load_labeler`` loads the
graph the flags of a tool that runs one name.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
from typing import TYPE_CHECKING, Callable, Mapping, NoReturn, Sequence

from retrain.errors import (
    EXIT_EXPORT_MISMATCH,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    ExportMismatch,
    UserError,
    command_line_spelling,
)
from retrain.models.architectures import ARCHITECTURES
from retrain.options import options_of
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
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        code = 1  # as Python's documentation advises for SIGPIPE
    sys.exit(code or 0)


def tool_parser(tool: str, description: str | None, choices: Mapping[str, Sequence[str]] | None = None,
                epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``tool``: its docstring as the description, then every option it takes (``add_options``).

    Args:
        tool: the tool's name in the table (``"retrain"``); it runs as ``python -m scripts.<tool>``.
        description: the text --help starts with (the tool module's docstring).
        choices: option name -> the values it takes, from the library's registry for them.
        epilog: the text --help ends with, if any.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog=f"python -m scripts.{tool}", description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, tool, choices)
    return parser


def add_options(parser: argparse.ArgumentParser, tool: str, choices: Mapping[str, Sequence[str]] | None = None) -> None:
    """Add every option of ``tool`` in ``retrain.options`` to ``parser``, in its --help sections.

    The help ends with the default unless it already speaks of it, there is
    none to show, or the tool requires the option; an option whose default is
    False is a switch; --architecture's help lists the registry's backbones.

    Args:
        parser: the tool's parser.
        tool: the tool's name in the table (``"retrain"``).
        choices: option name -> the values it takes, from the library's registry for them.
    """
    groups: dict[str, argparse._ActionsContainer] = {"": parser}
    for option in options_of(tool):
        group = groups.get(option.group) or groups.setdefault(option.group, parser.add_argument_group(option.group))
        flag = f"--{option.name}"
        if option.switch:
            group.add_argument(flag, action="store_true", help=option.help)
            continue
        required = tool in option.required
        help_text = option.help + (_backbone_names() if option.name == "architecture" else "")
        if not (required or "default" in option.help or option.default in ("", None)):
            help_text += " (default %(default)s)"
        group.add_argument(flag, type=option.value_type, default=None if required else option.default,
                           required=required, help=help_text, metavar=option.metavar, nargs=option.nargs,
                           choices=(choices or {}).get(option.name))


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> dict[str, object]:
    """The options the command line gives, parsed, without the ones left at their defaults.

    argparse fills a default only where its namespace has no value yet, so a namespace holding a marker for
    every option comes back with the marker wherever the flag was not typed: ``--fine_tune_blocks 0`` is
    given, even though it equals the default.

    Args:
        parser: the tool's parser (``tool_parser``).
        argv: the arguments, without the program name; None reads ``sys.argv``.

    Returns:
        option keyword -> value, for the flags typed only.
    """
    not_given = object()
    parsed = parser.parse_args(argv, argparse.Namespace(**{action.dest: not_given for action in parser._actions
                                                           if action.dest != argparse.SUPPRESS}))
    return {name: value for name, value in vars(parsed).items() if value is not not_given}


_QUANTIZED = "_quantized"  # how the registry names a MobileNet's 8-bit twin


def _backbone_names() -> str:
    """The registry's backbone names, a quantized twin folded into its float row: `` One of: a[_quantized], b.``"""
    names = [name for name in ARCHITECTURES if not (name.endswith(_QUANTIZED) and name[:-len(_QUANTIZED)] in
                                                    ARCHITECTURES)]
    return " One of: " + ", ".join(name + (f"[{_QUANTIZED}]" if name + _QUANTIZED in ARCHITECTURES else "")
                                   for name in names) + "."


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
    """The GraphLabeler the graph options (--graph, --labels, --input_layer, ...) describe (imports TensorFlow)."""
    from retrain.label.labeler import GraphLabeler
    warn_if_trusted(args, args.graph)
    return GraphLabeler(args.graph, args.labels, trust_graph=args.trust_graph,
                        max_image_megapixels=args.max_image_megapixels, input_layer=args.input_layer,
                        output_layer=args.output_layer, input_height=args.input_height,
                        input_width=args.input_width, input_mean=args.input_mean, input_std=args.input_std)


def note_unknown(labeler: GraphLabeler) -> None:
    """One ``note:`` line on stderr when the model cannot say "none of these"; printed once the flags are checked,
    as labelling starts, so that a flag mistake stays one error line."""
    if labeler.unknown_note:
        print(f"note: {labeler.unknown_note}", file=sys.stderr)
