"""'None of these' (issue 22): the unknown score on held-out photos of the known classes and on photos of other things.

One seeded retrain (real MobileNet v1, default split and flags) on a known side, then the score is judged on images
it never saw: the held-out test split of the known classes against each unknown set, by AUROC and by the share of
each side flagged. Two known sides (``--known``):

- ``flowers``: the shared flowers; unknown sets: every image of the ``--unknown_dir`` folders, and
  ``--caltech_classes`` Caltech-101 classes spread over ``--caltech_dir`` (every k-th, up to ``--per_class`` each).
- ``caltech``: ``--caltech_known`` Caltech-101 classes (every other class of the sorted list, ``Faces_easy`` left
  out as a copy of ``Faces``; up to ``--known_per_class`` photos each, linked into a temporary folder); unknown
  sets: the other classes (up to ``--per_class`` photos each) and the ``--unknown_dir`` folders.

The rows: the highest softmax probability (what ``--min_confidence`` uses; 1 - it is the score, its threshold at
the same quantile of the validation images), the trained model's ``unknown_score`` at its own threshold (what the
exported graph carries: the export check holds the graph to these scores), and with ``--variants`` other scores
and threshold rules on the same cached features (``VARIANTS``: ridges, all on unit-length features as
retrain's score; ``THRESHOLDS``). Every image's features are cached in
``--bottleneck_dir``, the unknown sets' too, so a second run computes nothing. ``--resplits N`` also refits retrain's
score on N seeded random re-splits of the known images (same shares) and pools their test parts: a small test split
flags in coarse steps.

    python -m benchmarks.unknown --known flowers --image_dir ../shared/data/flower_photos
    python -m benchmarks.unknown --known caltech --caltech_dir ../shared/data/caltech101 --variants --resplits 20
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import FLOWERS, WORK_DIR
from retrain.cache.bottlenecks import get_bottlenecks
from retrain.cache.store import BottleneckCache
from retrain.data.images import iter_image_files
from retrain.metrics import auroc
from retrain.models.backbones import load_backbone
from retrain.pipeline import RetrainResult, retrain_options, run_retrain
from retrain.training.unknown import (
    RIDGE,
    UNKNOWN_QUANTILE,
    fit_leave_one_out,
    fit_unknown_score,
    fit_unknown_threshold,
    unit_rows,
)

DUPLICATE_CLASSES = ("Faces_easy",)  # the photos of Faces, cropped closer: on both sides it would be one class


def ledoit_wolf_ridge(features: np.ndarray, labels: np.ndarray) -> float:
    """The ridge (relative to trace / D) that Ledoit-Wolf shrinkage of the within-class covariance (of the unit
    rows, as the score sees them) towards the scaled identity amounts to: ``(1 - s) S + s mu I`` is
    ``S + s / (1 - s) mu I`` scaled, and a scaled covariance scales every score alike."""
    features = unit_rows(features)
    classes, index = np.unique(labels, return_inverse=True)
    means = np.stack([features[index == c].mean(axis=0) for c in range(len(classes))])
    centred = features - means[index]
    count, dimensions = centred.shape
    covariance = centred.T @ centred / count
    mu = np.trace(covariance) / dimensions
    spread = float(np.sum((covariance - mu * np.eye(dimensions)) ** 2))
    # the variance of the sample covariance: mean over rows of |x x^T - S|^2_F, over the row count
    noise = float(np.sum(np.sum(centred ** 2, axis=1) ** 2) / count - np.sum(covariance ** 2)) / count
    shrinkage = min(1.0, noise / spread)
    return shrinkage / max(1 - shrinkage, 1e-12)


VARIANTS = {  # name -> the ridge (relative to trace / D) from the training features and labels
    "ridge 1e-3": lambda f, y: 1e-3,
    "ridge 1e-1": lambda f, y: 0.1,
    "ridge 1": lambda f, y: 1.0,
    "ridge 3 (retrain's)": lambda f, y: RIDGE,
    "ridge 10": lambda f, y: 10.0,
    "Ledoit-Wolf shrinkage": ledoit_wolf_ridge,
}
FOLDS = 5  # for the k-fold threshold rule: fits on 4/5 of the training images score the other 1/5
THRESHOLDS = ("validation only", f"{FOLDS}-fold out of fold + validation", "leave-one-out only",
              "leave-one-out + validation (retrain's)")


def out_of_fold(features: np.ndarray, labels: np.ndarray, ridge: float) -> np.ndarray:
    """Each training image's score from a fit on the other folds (fold: its rank within its class mod FOLDS)."""
    rank = np.empty(len(labels), np.int64)
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    fold = rank % FOLDS
    return np.concatenate([fit_unknown_score(features[fold != k], labels[fold != k], ridge).scores(features[fold == k])
                           for k in range(FOLDS)])


def caltech_known_folder(caltech_dir: Path, classes: int, per_class: int, into: Path) -> list[Path]:
    """Link ``per_class`` photos of every other Caltech class into ``into`` (one folder each); the rest's folders."""
    folders = [p for p in sorted(caltech_dir.iterdir()) if p.is_dir() and p.name not in DUPLICATE_CLASSES]
    known, others = folders[0::2][:classes], [p for p in folders if p not in folders[0::2][:classes]]
    for folder in known:
        (into / folder.name).mkdir()
        for path in iter_image_files(folder)[:per_class]:
            os.symlink(path.resolve(), into / folder.name / path.name)
    return others


def cached_features(paths: list[Path], options, backbone) -> np.ndarray:
    """The features of ``paths`` (unreadable ones left out), from ``--bottleneck_dir`` or computed into it."""
    cache = BottleneckCache(options.bottleneck_dir, backbone.spec.cache_id, backbone.feature_size)
    rows = get_bottlenecks(paths, backbone, backbone.input_size, cache, log=lambda message: None).features
    return np.asarray(rows[np.arange(len(rows))] if not isinstance(rows, np.ndarray) else rows, np.float64)


def judged(known: np.ndarray, threshold: float, unknown: dict[str, np.ndarray]) -> str:
    """One table row's cells: AUROC per unknown set, the known side flagged, each unknown set flagged."""
    cells = [f"{auroc(known, scores):.3f}" for scores in unknown.values()]
    cells.append(f"{np.mean(known > threshold):.1%}")
    cells += [f"{np.mean(scores > threshold):.1%}" for scores in unknown.values()]
    return " | ".join(cells)


def variant_rows(result: RetrainResult, unknown: dict[str, np.ndarray], quantile: float) -> list[str]:
    """``VARIANTS`` x ``THRESHOLDS`` on the same features, and how pessimistic the out-of-fold scores are."""
    rows = []
    train, validation, test = (result.data[split] for split in ("train", "validation", "test"))
    features = np.asarray(train.features, np.float64)
    for name, ridge_of in VARIANTS.items():
        ridge = ridge_of(features, train.labels)
        score, left_out = fit_leave_one_out(features, train.labels, ridge)
        folds = out_of_fold(features, train.labels, ridge)
        validation_scores, test_scores = score.scores(validation.features), score.scores(test.features)
        pools = dict(zip(THRESHOLDS, (validation_scores, np.concatenate([folds, validation_scores]), left_out,
                                      np.concatenate([left_out, validation_scores]))))
        scored = {key: score.scores(value) for key, value in unknown.items()}
        for rule, pool in pools.items():
            threshold = float(np.quantile(pool, quantile))
            rows.append(f"| {name} (ridge {ridge:.3g}) | {rule} | {len(pool)} | {threshold:.4g} | "
                        f"{judged(test_scores, threshold, scored)} |")
        # the k-fold fits have 1/FOLDS fewer images: how much higher do their images score than new ones?
        rows.append(f"| {name} | median score: {FOLDS}-fold {np.median(folds):.4g}, leave-one-out "
                    f"{np.median(left_out):.4g}, validation {np.median(validation_scores):.4g}, test "
                    f"{np.median(test_scores):.4g} | | | |")
    return rows


def resplit_rows(result: RetrainResult, unknown: dict[str, np.ndarray], quantile: float, draws: int) -> list[str]:
    """retrain's score over ``draws`` seeded random re-splits of the known images into the same shares: fitted on
    the training part, the threshold set from the validation part alone or pooled with the leave-one-out scores
    (``fit_unknown_threshold``), judged on the test part. 58 test flowers flag in steps of 1.7%; re-splitting
    pools ``draws`` times as many test images."""
    splits = [result.data[split] for split in ("train", "validation", "test")]
    features = np.concatenate([np.asarray(split.features, np.float64) for split in splits])
    labels = np.concatenate([split.labels for split in splits])
    train_size, validation_size = len(splits[0].labels), len(splits[1].labels)
    rng = np.random.default_rng(0)
    rules = (THRESHOLDS[0], THRESHOLDS[-1])
    judged_by_rule: dict[str, list[tuple[np.ndarray, list[float], list[float]]]] = {rule: [] for rule in rules}
    for _ in range(draws):
        order = rng.permutation(len(labels))
        train, validation, test = np.split(order, [train_size, train_size + validation_size])
        score = fit_unknown_threshold(features[train], labels[train], features[validation], quantile,
                                      log=lambda message: None)
        validation_only = float(np.quantile(score.scores(features[validation]), quantile))
        test_scores = score.scores(features[test])
        unknown_scores = [score.scores(scores) for scores in unknown.values()]
        for rule, threshold in zip(rules, (validation_only, score.threshold)):
            judged_by_rule[rule].append((test_scores > threshold, [auroc(test_scores, u) for u in unknown_scores],
                                         [float(np.mean(u > threshold)) for u in unknown_scores]))
    rows = []
    for rule, runs in judged_by_rule.items():
        flagged = np.concatenate([run[0] for run in runs])
        aurocs, shares = np.mean([run[1] for run in runs], axis=0), np.mean([run[2] for run in runs], axis=0)
        spread = np.std([run[0].mean() for run in runs])  # how far one split's share strays
        rows.append(f"| {rule} | {draws} | {' | '.join(f'{a:.3f}' for a in aurocs)} | {flagged.mean():.1%} "
                    f"({flagged.sum()} of {len(flagged)}), {spread:.1%} | {' | '.join(f'{s:.1%}' for s in shares)} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--known", choices=("flowers", "caltech"), default="flowers")
    parser.add_argument("--bottleneck_dir", default=str(WORK_DIR / "unknown_bottlenecks"))
    parser.add_argument("--image_dir", default=str(FLOWERS))
    parser.add_argument("--unknown_dir", nargs="*", default=[str(FLOWERS.parent / "other_things")])
    parser.add_argument("--caltech_dir", default=str(FLOWERS.parent / "caltech101"))
    parser.add_argument("--caltech_classes", type=int, default=20, help="flowers: every k-th class, k = classes / this")
    parser.add_argument("--caltech_known", type=int, default=50, help="caltech: known classes, every other one")
    parser.add_argument("--known_per_class", type=int, default=80, help="caltech: photos per known class, at most")
    parser.add_argument("--per_class", type=int, default=20, help="photos per unknown Caltech class, at most")
    parser.add_argument("--unknown_quantile", type=float, default=UNKNOWN_QUANTILE)
    parser.add_argument("--variants", action="store_true", help="also compare VARIANTS x THRESHOLDS")
    parser.add_argument("--resplits", type=int, default=0, help="also judge the score over this many re-splits")
    args = parser.parse_args()
    caltech_dir = Path(args.caltech_dir)
    with tempfile.TemporaryDirectory() as out:
        if args.known == "caltech":
            image_dir = Path(out) / "known"
            image_dir.mkdir()
            caltech_unknown = caltech_known_folder(caltech_dir, args.caltech_known, args.known_per_class, image_dir)
            caltech_name = f"Caltech-101, the other {len(caltech_unknown)} classes"
        else:
            image_dir = Path(args.image_dir)
            classes = sorted(p for p in caltech_dir.iterdir() if p.is_dir())
            caltech_unknown = classes[::max(1, len(classes) // args.caltech_classes)][:args.caltech_classes]
            caltech_name = f"Caltech-101, {len(caltech_unknown)} classes"
        options = retrain_options({"image_dir": str(image_dir), "bottleneck_dir": args.bottleneck_dir,
                                   "random_seed": 0, "output_graph": f"{out}/g.pb", "unknown_quantile":
                                   args.unknown_quantile, "output_labels": f"{out}/labels.txt",
                                   "summaries_dir": f"{out}/logs"})
        result = run_retrain(options, log=lambda message: None)
    sets = {Path(folder).name: iter_image_files(Path(folder)) for folder in args.unknown_dir}
    sets[caltech_name] = [path for folder in caltech_unknown for path in iter_image_files(folder)[:args.per_class]]
    backbone = load_backbone(options.architecture, options.model_dir, options.trust_graph)
    unknown = {name: cached_features(paths, options, backbone) for name, paths in sets.items()}
    test, validation = result.data["test"], result.data["validation"]
    print(f"known: {len(result.labels)} classes, {len(result.data['train'].labels)} training, "
          f"{len(validation.labels)} validation, {len(test.labels)} test images; unknown: "
          + ", ".join(f"{name} {len(features)}" for name, features in unknown.items()))
    names = list(unknown)
    print(f"| score | threshold | AUROC {' | AUROC '.join(names)} | test flagged | {' flagged | '.join(names)} "
          f"flagged |")
    print("| --- | --- |" + " ---: |" * (2 * len(names) + 1))
    softmax = {name: 1 - result.head.predict_proba(features).max(axis=1) for name, features in unknown.items()}
    softmax_test = 1 - result.head.predict_proba(test.features).max(axis=1)
    softmax_validation = 1 - result.head.predict_proba(validation.features).max(axis=1)
    softmax_threshold = float(np.quantile(softmax_validation, args.unknown_quantile))
    print(f"| highest softmax probability | validation only | "
          f"{judged(softmax_test, softmax_threshold, softmax)} |")
    score = result.head.unknown
    print(f"| unknown_score (the trained model's) | {score.threshold:.4g} | "
          f"{judged(score.scores(test.features), score.threshold, {k: score.scores(v) for k, v in unknown.items()})} |")
    if args.variants:
        print("\n| score | threshold rule | scores | threshold | AUROCs, flagged |\n| --- | --- | ---: | ---: | --- |")
        print("\n".join(variant_rows(result, unknown, args.unknown_quantile)))
    if args.resplits:
        print(f"\n| threshold rule | re-splits | AUROC {' | AUROC '.join(names)} | test flagged, sd over "
              f"re-splits | {' flagged | '.join(names)} flagged |\n| --- |" + " ---: |" * (2 * len(names) + 2))
        print("\n".join(resplit_rows(result, unknown, args.unknown_quantile, args.resplits)))


if __name__ == "__main__":
    main()
