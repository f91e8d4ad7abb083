"""How much can fine-tuning gain at most on these photos? Fresh distortions at every step, through the backbone.

``--augment_copies K`` caches K distorted views of each training photo; a
run through the backbone can draw a new one every time it sees a photo
(Poets' per-step distortion path, which issue 13 removed). This benchmark
trains that way, with no cache: the top ``--blocks`` N blocks (13 is all of
MobileNet v1 but its first convolution) and the head, each training photo
freshly distorted in every epoch and run through the frozen part below the
cut at every step. The split, the stage-one head (Poets' defaults on the
pooled features of the undistorted photos) and the stage-two step (Adam on
the top blocks and the head, batch-norm in inference mode) are retrain's own
(``split_images``, ``train_head``, ``finetune.trainer``). It reports the
test accuracy of each depth and learning rate after each ``--eval_every``
epochs, against the linear head of stage one.

No cached configuration has more distinct views to learn from, so if none of
these beats the linear head by issue 13's 3 points, ``--fine_tune_blocks``
with ``--augment_copies`` is not expected to either.

    python -m benchmarks.finetune_ceiling [--blocks 1 6 13] [--learning_rates 1e-5 3e-5 1e-4] [--epochs 20]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import FLOWERS, machine

MARGIN_TARGET = 3.0  # issue 13: points of test accuracy over the linear head


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", type=Path, default=FLOWERS)
    parser.add_argument("--testing_percentage", type=float, default=40)
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 6, 13])
    parser.add_argument("--learning_rates", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval_every", type=int, default=10, help="Epochs between test evaluations.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random_crop", type=float, default=30, help="Poets' flag, percent (retrain's default: 0).")
    parser.add_argument("--random_scale", type=float, default=30, help="Poets' flag, percent.")
    parser.add_argument("--random_brightness", type=float, default=20, help="Poets' flag, percent.")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from retrain.data.decode import DEFAULT_MAX_IMAGE_MEGAPIXELS, load_rgb
    from retrain.data.distortions import Distortions, distort_image
    from retrain.data.images import labels_of, split_images
    from retrain.files import DEFAULT_MODEL_DIR
    from retrain.models.architectures import DEFAULT_ARCHITECTURE, get_architecture
    from retrain.models.backbones import load_backbone
    from retrain.models.cut import cut_backbone
    from retrain.training.batches import in_memory_batches
    from retrain.training.finetune import FineTuneConfig, pooled_features, trainer
    from retrain.training.head import TrainingConfig, train_head

    print(machine())
    records = split_images(args.image_dir, testing_percentage=args.testing_percentage)
    labels = labels_of(records)
    split = {name: [r for r in records if r.split == name] for name in ("train", "validation", "test")}
    targets = {name: np.array([labels.index(r.label) for r in rs], np.int32) for name, rs in split.items()}
    spec = get_architecture(DEFAULT_ARCHITECTURE)
    size = spec.input_size
    pixels = {name: np.stack([load_rgb(r.path, size, size) for r in rs]) for name, rs in split.items()}
    distortions = Distortions(True, args.random_crop, args.random_scale, args.random_brightness)
    batch = FineTuneConfig().batch_size
    print(f"{args.image_dir}, --testing_percentage {args.testing_percentage:g}: "
          + ", ".join(f"{len(rs)} {name}" for name, rs in split.items())
          + f"; {distortions}, drawn afresh for every photo in every epoch; Adam, batches of {batch}, seed {args.seed}",
          flush=True)

    backbone = load_backbone(spec, DEFAULT_MODEL_DIR)
    pooled = {name: np.concatenate([backbone(x[i:i + batch]) for i in range(0, len(x), batch)])
              for name, x in pixels.items()}
    linear = train_head(in_memory_batches(pooled["train"], targets["train"]), backbone.feature_size, len(labels),
                        TrainingConfig(seed=args.seed))

    def accuracy(predict, name: str) -> float:
        return 100 * float(np.mean(np.argmax(predict(name), 1) == targets[name]))

    def linear_predict(name: str) -> np.ndarray:
        return linear.predict_proba(pooled[name])

    linear_test = accuracy(linear_predict, "test")
    print(f"linear head (Poets' defaults): validation {accuracy(linear_predict, 'validation'):.1f}%, "
          f"test {linear_test:.1f}%", flush=True)

    results = []
    for blocks in args.blocks:
        for learning_rate in args.learning_rates:
            cut = cut_backbone(backbone, blocks, DEFAULT_MODEL_DIR)
            config = FineTuneConfig(learning_rate=learning_rate, epochs=args.epochs)  # constant rate, as measured
            training = trainer(cut.top, linear, int(np.prod(cut.top.cut_shape)), tf.float32, config,
                               config.steps_for(len(split["train"])))

            def predict(name: str) -> np.ndarray:
                x = pixels[name]
                features = np.concatenate([pooled_features(cut.top, cut.lower(x[i:i + batch]))
                                           for i in range(0, len(x), batch)])
                return training.head().predict_proba(features)

            rng = np.random.default_rng(args.seed)
            started = time.monotonic()
            for epoch in range(1, args.epochs + 1):
                order = rng.permutation(len(split["train"]))
                for start in range(0, len(order) - batch + 1, batch):
                    picked = np.sort(order[start:start + batch])
                    views = np.stack([distort_image(split["train"][i].path, size, distortions, rng,
                                                    DEFAULT_MAX_IMAGE_MEGAPIXELS) for i in picked])
                    training.step(cut.lower(views), targets["train"][picked])
                if epoch % args.eval_every == 0 or epoch == args.epochs:
                    test = accuracy(predict, "test")
                    print(f"{blocks:2} block(s), learning rate {learning_rate:g}, epoch {epoch:3}: validation "
                          f"{accuracy(predict, 'validation'):.1f}%, test {test:.1f}% ({test - linear_test:+.1f} "
                          f"points; {time.monotonic() - started:.0f} s)", flush=True)
                    results.append((test, blocks, learning_rate, epoch))
    print(result_line(results, linear_test))
    return 0


def result_line(results: list[tuple[float, int, float, int]], linear_test: float) -> str:
    """The best reading of all (test accuracy, blocks, learning rate, epoch), against the linear head."""
    best, blocks, learning_rate, epoch = max(results)
    return (f"RESULT fine-tuning with fresh distortions every step: best test {best:.1f}% ({blocks} block(s), "
            f"learning rate {learning_rate:g}, epoch {epoch}: a choice that looked at test) vs linear head "
            f"{linear_test:.1f}% = {best - linear_test:+.1f} points (issue 13's target: +{MARGIN_TARGET:g})")


if __name__ == "__main__":
    sys.exit(main())
