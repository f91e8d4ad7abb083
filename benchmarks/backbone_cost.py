"""What one image costs each Keras row of the registry on this CPU, and how many parameters it has.

Every Keras row is built as retrain builds it (``keras_features``) but with
random weights: the weights cannot be downloaded here, and the cost depends
on the shapes, not on the values. One image at the row's input size goes
through the compiled backbone (normalisation included) 3 times to warm up,
then ``--runs`` times; the median is reported, with TensorFlow's default
threads (all cores). The bundled MobileNet v1 is timed the same way for
comparison. The figures go into ``architectures.MEASURED_COST`` by hand.

    python -m benchmarks.backbone_cost [--runs 15] [--architectures NAME ...]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--architectures", nargs="*",
                        default=[name for name, spec in ARCHITECTURES.items() if spec.source == "keras"])
    args = parser.parse_args()
    print(machine())
    bundled = load_backbone(ARCHITECTURES[DEFAULT_ARCHITECTURE], PROJECT / "models")
    print(f"{DEFAULT_ARCHITECTURE:20} (bundled frozen graph)  {median_milliseconds(bundled, args.runs):7.1f} ms")
    for name in args.architectures:
        spec = ARCHITECTURES[name]
        features = keras_features(spec, None)
        backbone = compiled_backbone(spec, features, spec.feature_size)
        parameters = features.keras_model.count_params() / 1e6
        print(f"RESULT {name:20} {parameters:6.2f} M parameters  {median_milliseconds(backbone, args.runs):7.1f} ms "
              f"an image", flush=True)


if __name__ == "__main__":
    main()
