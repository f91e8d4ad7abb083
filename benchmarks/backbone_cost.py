"""What one image costs each Keras row of the registry: multiply-adds, and milliseconds on this CPU; and parameters.

Every Keras row is built as retrain builds it (``keras_features``) but with
random weights: the weights cannot be downloaded here, and the cost depends
on the shapes, not on the values. One image at the row's input size goes
through the compiled backbone (normalisation included) 3 times to warm up,
then ``--runs`` times; the median is reported, with TensorFlow's default
threads (all cores). The bundled MobileNet v1 is timed the same way for
comparison. The multiply-adds are counted from the model's layer shapes
(convolutions and dense layers; the rest is a rounding error) and do not
depend on the machine or its load, which the milliseconds do: ``--runs 0``
only counts. The figures go into ``architectures.MEASURED_COST`` by hand.

    python -m benchmarks.backbone_cost [--runs 21] [--architectures NAME ...]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import PROJECT, machine
from retrain.models.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE
from retrain.models.backbones import compiled_backbone, keras_features, load_backbone

WARM_UP_RUNS = 3


def median_milliseconds(backbone, runs: int) -> float:
    image = np.random.default_rng(0).integers(0, 256, (1, backbone.input_size, backbone.input_size, 3), np.uint8)
    for _ in range(WARM_UP_RUNS):
        backbone(image)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        backbone(image)
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds)


def multiply_adds(model) -> int:
    """Multiply-adds of one image through ``model``'s convolutions and dense layers (nested models included)."""
    import keras
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            positions = int(np.prod(layer.output.shape[1:-1]))  # output pixels (1 for a dense layer on vectors)
            total += positions * int(np.prod(layer.kernel.shape))  # kernel: kh x kw x (in / groups) x out, or in x out
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--architectures", nargs="*",
                        default=[name for name, spec in ARCHITECTURES.items() if spec.source == "keras"])
    args = parser.parse_args()
    print(machine())
    if args.runs:
        bundled = load_backbone(ARCHITECTURES[DEFAULT_ARCHITECTURE], PROJECT / "models")
        print(f"{DEFAULT_ARCHITECTURE:20} (bundled frozen graph)  {median_milliseconds(bundled, args.runs):7.1f} ms")
    for name in args.architectures:
        spec = ARCHITECTURES[name]
        features = keras_features(spec, None)
        model = features.keras_model
        timing = ""
        if args.runs:
            timing = f"{median_milliseconds(compiled_backbone(spec, features, spec.feature_size), args.runs):7.1f} ms"
        print(f"RESULT {name:20} {model.count_params() / 1e6:6.2f} M parameters  {multiply_adds(model) / 1e9:6.2f} G "
              f"multiply-adds  {timing}", flush=True)

if __name__ == "__main__":
    main()
