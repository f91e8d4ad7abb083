"""'None of these' on the shared flowers (issue 22): the exported graph's unknown_score against photos of other things.

One seeded retrain on the flowers (real MobileNet v1, default split, default ``--unknown_quantile``), then the
written frozen graph is run, as ``label_image`` runs it, on the held-out test flowers and on each unknown set:
``--unknown_dir`` folders (every image in them) and ``--caltech_classes`` classes of ``--caltech_dir`` (up to
``--per_class`` photos each). Two scores, each judged by AUROC (test flowers against the other things) and by the
share of each side flagged: the highest softmax probability (what ``--min_confidence`` uses; 1 - it is the score,
threshold at the same quantile of the validation flowers) and the graph's ``unknown_score`` at the sidecar's
threshold.

    python -m benchmarks.unknown --image_dir ../shared/data/flower_photos
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import FLOWERS
from retrain.data.decode import decode_sample
from retrain.data.images import iter_image_files
from retrain.graph_contract import Sidecar
from retrain.metrics import auroc
from retrain.models.model_file import load_model
from retrain.pipeline import retrain_options, run_retrain
from retrain.training.unknown import UNKNOWN_QUANTILE

MANY = 10 ** 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bottleneck_dir", default=str(Path(tempfile.gettempdir()) / "unknown_bottlenecks"))
    parser.add_argument("--image_dir", default=str(FLOWERS))
    parser.add_argument("--unknown_dir", nargs="*", default=[str(FLOWERS.parent / "other_things")])
    parser.add_argument("--caltech_dir", default=str(FLOWERS.parent / "caltech101"))
    parser.add_argument("--caltech_classes", type=int, default=20, help="every k-th class, k = classes / this")
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--unknown_quantile", type=float, default=UNKNOWN_QUANTILE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        options = retrain_options({"image_dir": args.image_dir, "bottleneck_dir": args.bottleneck_dir,
                                   "random_seed": 0, "output_graph": f"{out}/g.pb", "unknown_quantile":
                                   args.unknown_quantile, "output_labels": f"{out}/labels.txt",
                                   "summaries_dir": f"{out}/logs"})
        result = run_retrain(options, log=lambda message: None)
        contract = Sidecar.read(f"{out}/g.pb")
        model = load_model(f"{out}/g.pb")
        normalization = (contract.input_mean, contract.input_std)

        def run(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
            pixels = decode_sample(paths, MANY, contract.input_height, contract.input_width)[1]
            answers = [model.predict_with_unknown(pixels[i:i + 32], normalization) for i in range(0, len(pixels), 32)]
            return (1 - np.concatenate([p for p, _ in answers]).max(axis=1), np.concatenate([s for _, s in answers]))

        known = run(result.data["test"].paths)
        softmax_threshold = float(np.quantile(run(result.data["validation"].paths)[0], args.unknown_quantile))
        sets = {Path(folder).name: iter_image_files(Path(folder)) for folder in args.unknown_dir}
        classes = sorted(p for p in Path(args.caltech_dir).iterdir() if p.is_dir())
        chosen = classes[::max(1, len(classes) // args.caltech_classes)][:args.caltech_classes]
        sets[f"Caltech-101, {len(chosen)} classes"] = [path for folder in chosen
                                                       for path in iter_image_files(folder)[:args.per_class]]
        print(f"known: {len(known[0])} test flowers; threshold {contract.unknown_threshold:.1f} at quantile "
              f"{args.unknown_quantile} of {len(result.data['validation'].paths)} validation flowers; Caltech "
              f"classes: {', '.join(folder.name for folder in chosen)}")
        print("| unknown set | photos | score | AUROC | flowers flagged | unknowns flagged |")
        print("| --- | ---: | --- | ---: | ---: | ---: |")
        for name, paths in sets.items():
            unknown = run(paths)
            for column, score, threshold in ((0, "highest softmax probability", softmax_threshold),
                                             (1, "unknown_score (graph)", contract.unknown_threshold)):
                print(f"| {name} | {len(unknown[column])} | {score} | {auroc(known[column], unknown[column]):.3f} | "
                      f"{np.mean(known[column] > threshold):.1%} | {np.mean(unknown[column] > threshold):.1%} |")


if __name__ == "__main__":
    main()
