"""ECE before and after --calibrate on the shared flowers (issue 22), with the noise floor of the test split.

For each configuration: one seeded retrain (real MobileNet v1, bottlenecks cached in ``--bottleneck_dir``), then on
the test split the expected calibration error (15 equal-width bins) of the trained softmax and of the calibrated
one, whether every test image keeps its top-1, and the noise floor: the mean ECE of a perfectly calibrated model
with these very confidences, i.e. with each test label drawn from the calibrated probabilities (200 draws). An ECE
near the floor is as low as this many test images can show.

    python -m benchmarks.calibration [--bottleneck_dir /tmp/retrain_bench/calibration_bottlenecks]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile

import numpy as np

from benchmarks.common import FLOWERS, WORK_DIR
from retrain.metrics import expected_calibration_error
from retrain.pipeline import retrain_options, run_retrain

CONFIGURATIONS = {  # name -> retrain option keywords beyond the image folder, the seed and --calibrate
    "default head, default split": {},
    "default head, --testing_percentage 40": {"testing_percentage": 40},
    "--optimizer adam --learning_rate 0.001, --testing_percentage 40": {
        "testing_percentage": 40, "optimizer": "adam", "learning_rate": 0.001},
}
NOISE_DRAWS = 200


def noise_floor(probabilities: np.ndarray, rng: np.random.Generator) -> float:
    """Mean ECE when each row's label is drawn from its own probabilities (a perfectly calibrated model)."""
    cumulative = probabilities.cumsum(axis=1)
    last = probabilities.shape[1] - 1  # a cumulative sum a rounding short of 1 must not draw a class past the last
    draws = [np.minimum((rng.random((len(probabilities), 1)) > cumulative).sum(axis=1), last)
             for _ in range(NOISE_DRAWS)]
    return float(np.mean([expected_calibration_error(probabilities, truths) for truths in draws]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bottleneck_dir", default=str(WORK_DIR / "calibration_bottlenecks"))
    parser.add_argument("--image_dir", default=str(FLOWERS))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for name, extra in CONFIGURATIONS.items():
        with tempfile.TemporaryDirectory() as out:
            options = retrain_options({"image_dir": args.image_dir, "bottleneck_dir": args.bottleneck_dir,
                                       "random_seed": 0, "calibrate": True, "output_graph": f"{out}/g.pb",
                                       "output_labels": f"{out}/labels.txt", "summaries_dir": f"{out}/logs",
                                       **extra})
            result = run_retrain(options, log=lambda message: None)
        test = result.data["test"]
        calibrated = result.head.predict_proba(test.features)
        trained = dataclasses.replace(result.head, temperature=1.0).predict_proba(test.features)
        same_top1 = int((calibrated.argmax(axis=1) == trained.argmax(axis=1)).sum())
        print(f"{name}: N={len(test.labels)}, accuracy {result.test_report.accuracy:.3f}, temperature "
              f"{result.head.temperature:.3f}, ECE {expected_calibration_error(trained, test.labels):.3f} before, "
              f"{expected_calibration_error(calibrated, test.labels):.3f} after, noise floor "
              f"{noise_floor(calibrated, rng):.3f}; top-1 unchanged on {same_top1}/{len(test.labels)}")


if __name__ == "__main__":
    main()
