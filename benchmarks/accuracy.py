"""Accuracy beyond the linear head: fine-tuning the top blocks, augmentation through the cache (issue 13).

Part 1, whole ``scripts.retrain`` processes on ``--image_dir`` with a large
held-out share (``--testing_percentage 40``), each configuration with
``--seeds`` seeds: the linear head with Poets' defaults, the best head options
(``HEAD_OPTIONS``), and ``--fine_tune_blocks`` N, each with and without
``--augment_copies``. Per configuration: mean and spread of test accuracy, the
wall time of a cold run (empty cache) and a warm run (cache full), peak RSS,
cache size on disk.

Part 2, in this process: the time of one fine-tuning epoch through the top N
blocks from cached cut rows vs the same epoch through the whole backbone from
decoded images (the frozen part's forward pass plus the same training step);
medians of ``EPOCH_ROUNDS`` epochs of each kind, in alternation.

    python -m benchmarks.accuracy [--image_dir DIR] [--seeds 3] [--blocks 1 2 4 6] [--augment_copies 4]
    python -m benchmarks.accuracy --epochs_only [--blocks 1 2 4 6]
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import FLOWERS, PROJECT, WORK_DIR, folder_size_mb, machine, retrain_command, run_timed

MARGIN_TARGET = 3.0  # points of mean test accuracy over the linear head
EPOCH_TARGET = 5.0
EPOCH_ROUNDS = 5  # alternated epochs of each kind; medians compared
# The bundled default, Poets' original default and ResNet50 (Keras weights, random here: timing only).
EPOCH_ARCHITECTURES = ["mobilenet_1.0_224", "inception_v3", "resnet50"]
# The strongest head options of issue 13 part A (branch issue-13a), used when the CLI has them.
HEAD_OPTIONS = ["--hidden_units", "256", "--dropout", "0.3"]


@dataclass
class Result:
    name: str
    accuracies: list[float] = field(default_factory=list)
    cold_seconds: float = 0.0
    warm_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    cache_mb: float = 0.0

    def line(self) -> str:
        mean = statistics.mean(self.accuracies)
        spread = statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0
        runs = ", ".join(f"{a:.1f}" for a in self.accuracies)
        return (f"{self.name:34} test accuracy {mean:5.1f}% +- {spread:3.1f} ({runs}); "
                f"cold {self.cold_seconds:5.0f} s, "
                f"warm {self.warm_seconds:5.0f} s, peak RSS {self.peak_rss_mb:5.0f} MB, cache {self.cache_mb:6.0f} MB")


def test_accuracy(stdout: str) -> float:
    return float(re.search(r"Final test accuracy = ([\d.]+)%", stdout).group(1))


def cli_has(flag: str) -> bool:
    return flag in run_timed([sys.executable, "-m", "scripts.retrain", "--help"]).stdout


def measure(name: str, flags: list[str], image_dir: Path, work: Path, seeds: int, testing_percentage: float) -> Result:
    """Seed 0 on an empty cache (cold), the other seeds on the same cache.

    Without augmentation seed 1 finds every row cached: that is the warm run.
    Views are keyed by seed, so with augmentation seed 0 is rerun for it.
    """
    result = Result(name)
    out = work / re.sub(r"\W+", "_", name)
    shutil.rmtree(out, ignore_errors=True)
    runs = []
    for seed in range(seeds):
        command = retrain_command(image_dir, out, "--testing_percentage", str(testing_percentage), *flags,
                                  "--random_seed", str(seed))
        runs.append(run_timed(command))
        result.accuracies.append(test_accuracy(runs[-1].stdout))
        if seed == 0:
            result.cache_mb = folder_size_mb(out / "bottlenecks")
            if "--augment_copies" in flags or seeds == 1:
                runs.append(run_timed(command))
                assert test_accuracy(runs[-1].stdout) == result.accuracies[0]
    result.cold_seconds, result.warm_seconds = runs[0].seconds, runs[1].seconds
    result.peak_rss_mb = max(run.peak_rss_mb for run in runs)
    print(result.line(), flush=True)
    return result


def timing_backbone(name: str):
    """The registry row ``name`` loaded as retrain loads it, or, when its weights are not under ``models/``
    (no Keras weights can be downloaded here), the same network with random weights: what an epoch costs
    depends on the shapes of the products, not on the values of the weights.
    """
    from retrain.files import DEFAULT_MODEL_DIR
    from retrain.models.architectures import get_architecture
    from retrain.models.backbones import compiled_backbone, keras_features, load_backbone
    spec = get_architecture(name)
    if spec.source != "keras" or (Path(DEFAULT_MODEL_DIR) / spec.model_file).exists():
        return load_backbone(spec, DEFAULT_MODEL_DIR), "pretrained weights"
    return compiled_backbone(spec, keras_features(spec, None), spec.feature_size), "random weights (timing only)"


def epoch_ratio(image_dir: Path, architecture: str, blocks: int, images: int = 96,
                rounds: int = EPOCH_ROUNDS) -> tuple[float, float, str]:
    """Median seconds of one epoch over ``images`` decoded photos: from the cut cache, and through the whole backbone.

    The two are timed in alternation, ``rounds`` times each, so a change in the shared machine's load hits both.
    """
    from retrain.data.decode import load_rgb
    from retrain.files import DEFAULT_MODEL_DIR
    from retrain.models.cut import cut_backbone
    from retrain.training.finetune import FineTuneConfig, trainer
    from retrain.training.head import Head
    batch = FineTuneConfig().batch_size
    backbone, weights = timing_backbone(architecture)
    size = backbone.input_size
    cut = cut_backbone(backbone, blocks, DEFAULT_MODEL_DIR)
    paths = sorted(image_dir.rglob("*.jpg"))[:images]
    decoded = np.stack([load_rgb(p, size, size) for p in paths])
    labels = np.arange(len(paths), dtype=np.int32) % 5
    head = Head.linear(np.zeros((backbone.feature_size, 5), np.float32), np.zeros(5, np.float32))
    rows = np.concatenate([cut.lower(decoded[i:i + batch]) for i in range(0, len(decoded), batch)])
    rows = rows.astype(np.float16)  # as cached
    config = FineTuneConfig(learning_rate=1e-4)  # constant rate: the steps planned do not change a step's time
    training = trainer(cut.top, head, rows.shape[1], rows.dtype, config, config.steps_for(len(rows)))
    training.step(rows[:batch], labels[:batch])  # compile
    from_cache, lower = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            training.step(rows[i:i + batch], labels[i:i + batch])
        from_cache.append(time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(0, len(decoded), batch):  # the frozen part's forward pass, which the cache saves every epoch
            cut.lower(decoded[i:i + batch])
        lower.append(time.perf_counter() - started)
    cached = statistics.median(from_cache)
    return cached, cached + statistics.median(lower), weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=FLOWERS)
    parser.add_argument("--work_dir", type=Path, default=WORK_DIR / "accuracy")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--testing_percentage", type=float, default=40)
    parser.add_argument("--blocks", type=int, nargs="*", default=[1, 2, 4, 6])
    parser.add_argument("--epoch_architectures", nargs="*", default=EPOCH_ARCHITECTURES,
                        help="Registry rows whose epochs part 2 times (at --blocks that each has).")
    parser.add_argument("--augment_copies", type=int, default=4)
    parser.add_argument("--skip_epochs", action="store_true", help="Skip part 2 (epoch times).")
    parser.add_argument("--epochs_only", action="store_true", help="Only part 2 (epoch times).")
    parser.add_argument("--fine_tune_only", action="store_true", help="Skip the linear and head configurations.")
    parser.add_argument("--no_views", action="store_true", help="Skip the --augment_copies configurations.")
    args = parser.parse_args(argv)
    print(machine())
    print(f"{args.image_dir}, --testing_percentage {args.testing_percentage:g}, {args.seeds} seeds; "
          f"project {PROJECT}", flush=True)
    ratios = {}
    if not args.skip_epochs:
        from retrain.models.architectures import get_architecture
        for architecture in args.epoch_architectures:
            for blocks in (n for n in args.blocks if n <= len(get_architecture(architecture).fine_tune_cuts)):
                cached, whole, weights = epoch_ratio(args.image_dir, architecture, blocks)
                ratios[architecture, blocks] = whole / cached
                print(f"{architecture}, {weights}: epoch through the top {blocks} block(s): from the cut cache "
                      f"{cached:.2f} s, through the whole backbone {whole:.2f} s = {whole / cached:.1f}x", flush=True)
    configs = []
    if not args.fine_tune_only and not args.epochs_only:
        configs.append(("linear (Poets defaults)", []))
        if cli_has(HEAD_OPTIONS[0]):
            configs.append(("best head " + " ".join(HEAD_OPTIONS), HEAD_OPTIONS))
        else:
            print(f"best head options: {HEAD_OPTIONS[0]} is not in this build (issue 13 part A not merged); "
                  f"HEAD_OPTIONS in benchmarks/accuracy.py is the hook")
    configs += [(f"fine-tune {n} block(s)", ["--fine_tune_blocks", str(n)]) for n in args.blocks
                if not args.epochs_only]
    augmented = ["--augment_copies", str(args.augment_copies)]
    configs = [config for name, flags in configs
               for config in ((name, flags), (f"{name} + {args.augment_copies} views", flags + augmented))
               if not (args.no_views and config[1] is not flags)]
    results = [measure(name, flags, args.image_dir, args.work_dir, args.seeds, args.testing_percentage)
               for name, flags in configs]
    tuned = [r for r in results if r.name.startswith("fine-tune")]
    if tuned and not args.fine_tune_only:
        linear = statistics.mean(results[0].accuracies)
        best = max(tuned, key=lambda r: statistics.mean(r.accuracies))
        margin = statistics.mean(best.accuracies) - linear
        print(f"RESULT best fine-tuned: {best.name}, {statistics.mean(best.accuracies):.1f}% vs linear {linear:.1f}% "
              f"= {margin:+.1f} points "
              f"(target >= +{MARGIN_TARGET:g}: {'met' if margin >= MARGIN_TARGET else 'NOT met'})")
    for architecture in dict.fromkeys(name for name, _ in ratios):
        blocks, ratio = max(((n, r) for (name, n), r in ratios.items() if name == architecture), key=lambda x: x[1])
        print(f"RESULT {architecture}: epoch from the cut cache vs through the whole backbone: best {ratio:.1f}x at "
              f"{blocks} block(s) (target >= {EPOCH_TARGET:g}x: {'met' if ratio >= EPOCH_TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
