"""Convert a retrained graph to TFLite, a SavedModel or ONNX, and check the result against it.

Works with graphs made by retrain (the sidecar supplies size, mean, std and
labels) and by TensorFlow-for-Poets (batch size 1 baked in, no sidecar: pass
--labels and the input flags, as for label_image). The labels file and a
sidecar are written beside the output. With --image_dir (one sub-folder per
class), the written file is loaded as label_image would load it and compared
with the source graph on those images; --quantize int8 also calibrates on them.

    python -m scripts.export --graph out/retrained_graph.pb --to tflite --output out/flowers.tflite
    python -m scripts.export --graph retrained_graph.pb --labels retrained_labels.txt --to tflite \\
        --quantize int8 --image_dir flower_photos --output flowers_int8.tflite
    python -m scripts.export --graph out/retrained_graph.pb --to onnx --image_dir flower_photos \\
        --output out/flowers.onnx
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from retrain.cli.common import load_labeler, run_cli, tool_parser
from retrain.export.deploy import ExportRequest, export_model
from retrain.export.tflite import QUANTIZE_MODES, TFLITE_IO_TYPES

TARGETS = ("tflite", "saved_model", "onnx")


def build_parser() -> argparse.ArgumentParser:
    """export's flags: every option of "export" in ``retrain.options``, the formats from the library's lists."""
    return tool_parser("export", __doc__,
                       choices={"to": TARGETS, "quantize": QUANTIZE_MODES, "tflite_io": TFLITE_IO_TYPES})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
