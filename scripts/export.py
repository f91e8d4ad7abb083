"""Convert a retrained graph to TFLite or a SavedModel, and check the result against it.

Works with graphs made by retrain (the sidecar supplies size, mean, std and
labels) and by TensorFlow-for-Poets (batch size 1 baked in, no sidecar: pass
--labels and the input flags, as for label_image). The labels file and a
sidecar are written beside the output. With --image_dir (one sub-folder per
class), the written file is loaded as label_image would load it and compared
with the source graph on those images; --quantize int8 also calibrates on them.

    python -m scripts.export --graph out/retrained_graph.pb --to tflite --output out/flowers.tflite
    python -m scripts.export --graph retrained_graph.pb --labels retrained_labels.txt --to tflite \\
        --quantize int8 --image_dir flower_photos --output flowers_int8.tflite
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from retrain.deploy import ExportRequest
from retrain.tflite import QUANTIZE_MODES, TFLITE_IO_TYPES
from scripts._cli import add_graph_arguments, default_of, load_labeler, run_cli

TARGETS = ("tflite", "saved_model")


def build_parser() -> argparse.ArgumentParser:
    samples, checks = default_of(ExportRequest, "quantize_samples"), default_of(ExportRequest, "export_check_samples")
    parser = argparse.ArgumentParser(prog="python -m scripts.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_graph_arguments(parser)
    parser.add_argument("--to", required=True, choices=TARGETS, help="The format to write.")
    parser.add_argument("--output", required=True,
                        help="The .tflite file or SavedModel folder to write. Its sidecar (.json) and labels file "
                             "(.txt, unless --output_labels) go beside it.")
    parser.add_argument("--output_labels", default=None,
                        help="Where to write the labels file. (default: --output with the suffix .txt)")
    parser.add_argument("--image_dir", default=None,
                        help="Labelled images (one sub-folder per class) to check the written file against the "
                             "source graph on, and to calibrate --quantize int8 with.")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=default_of(ExportRequest, "quantize"),
                        help="TFLite only. float16 halves the size; dynamic stores weights as int8 (a quarter); "
                             "int8 runs fully in integers, calibrated on --image_dir. (default none)")
    parser.add_argument("--quantize_samples", type=int, default=samples,
                        help=f"Images from --image_dir used to calibrate int8. (default {samples})")
    parser.add_argument("--tflite_io", choices=TFLITE_IO_TYPES, default=default_of(ExportRequest, "tflite_io"),
                        help="Input and output type of an int8 model; uint8 for microcontrollers and Edge TPU, "
                             "quantised with the tensors' own scale and zero point. (default float)")
    parser.add_argument("--export_check_samples", type=int, default=checks,
                        help=f"Images from --image_dir the written file is checked on. (default {checks})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from retrain.deploy import export_model
    request = ExportRequest(args.graph, args.to, args.output, args.output_labels, args.image_dir, args.quantize,
                            args.quantize_samples, args.tflite_io, args.export_check_samples, args.trust_graph,
                            args.max_image_megapixels)
    for line in export_model(load_labeler(args), request):
        print(line)
    return 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
