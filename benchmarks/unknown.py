"""'None of these' on the shared flowers (issue 22): AUROC of the unknown score against photos of other things.

One seeded retrain on the flowers (real MobileNet v1, default split), then the features of every photo in
``--unknown_dir`` (cached in the same ``--bottleneck_dir``). Two scores, each judged by AUROC (known test flowers
against the other things) and by the share of each side flagged at the threshold that ``--unknown_quantile`` of the
validation flowers pass: the highest softmax probability (what ``--min_confidence`` uses; 1 - it is the score),
and the squared Mahalanobis distance to the nearest class mean (``retrain.training.unknown``).

    python -m benchmarks.unknown [--bottleneck_dir DIR] [--unknown_dir ../shared/data/other_things] [--ridges R ...]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import FLOWERS, WORK_DIR
from retrain.cache.bottlenecks import get_bottlenecks
from retrain.cache.store import BottleneckCache
from retrain.data.images import iter_image_files
from retrain.metrics import auroc
from retrain.models.backbones import load_backbone
from retrain.pipeline import retrain_options, run_retrain
from retrain.training.unknown import RIDGE, UNKNOWN_QUANTILE, fit_unknown_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bottleneck_dir", default=str(WORK_DIR / "unknown_bottlenecks"))
    parser.add_argument("--image_dir", default=str(FLOWERS))
    parser.add_argument("--unknown_dir", default=str(FLOWERS.parent / "other_things"))
    parser.add_argument("--unknown_quantile", type=float, default=UNKNOWN_QUANTILE)
    parser.add_argument("--ridges", type=float, nargs="+", default=[RIDGE])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        options = retrain_options({"image_dir": args.image_dir, "bottleneck_dir": args.bottleneck_dir,
                                   "random_seed": 0, "output_graph": f"{out}/g.pb",
                                   "output_labels": f"{out}/labels.txt", "summaries_dir": f"{out}/logs"})
        result = run_retrain(options, log=lambda message: None)
    backbone = load_backbone(options.architecture, options.model_dir)
    cache = BottleneckCache(args.bottleneck_dir, backbone.spec.cache_id, backbone.feature_size)
    unknown_paths = iter_image_files(Path(args.unknown_dir))
    others = get_bottlenecks(unknown_paths, backbone, backbone.input_size, cache, log=lambda message: None).features
    train, validation, test = (result.data[split] for split in ("train", "validation", "test"))

    def softmax_score(features: np.ndarray) -> np.ndarray:
        return 1 - result.head.predict_proba(features).max(axis=1)

    print(f"known: {len(test.labels)} test flowers (fitted on {len(train.labels)} training, threshold on "
          f"{len(validation.labels)} validation at quantile {args.unknown_quantile}); unknown: {len(others)} photos "
          f"of {args.unknown_dir}")
    scores = {"highest softmax probability": softmax_score}
    for ridge in args.ridges:
        fitted = fit_unknown_score(train.features, train.labels, ridge)
        scores[f"Mahalanobis, nearest class mean, shared covariance, ridge {ridge:g}"] = fitted.scores
    for name, score in scores.items():
        threshold = float(np.quantile(score(validation.features), args.unknown_quantile))  # as with_threshold
        known, unknown = score(test.features), score(others)
        print(f"{name}: AUROC {auroc(known, unknown):.3f}; flagged {np.mean(known > threshold):.1%} of the test "
              f"flowers, {np.mean(unknown > threshold):.1%} of the other things")


if __name__ == "__main__":
    main()
