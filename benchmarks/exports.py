"""Every deployable format of one retrained model, measured side by side on the flowers' test split.

Retrains MobileNet v1 on ../shared/data/flower_photos (Poets' default flags,
--random_seed 0, with a SavedModel), converts the frozen graph to TFLite
float, float16, dynamic-range and int8 (calibrated on up to 300 training
images), then for each of frozen graph, SavedModel and the four TFLite files:
size on disk, load time (open + first answer), single-image latency (median
of 100 calls, 2 threads), batch throughput (batches of 32, after a warm-up
pass), test accuracy and
top-1 agreement with the frozen graph; also agreement on the validation split.

    python -m benchmarks.exports

Acceptance (issue 9): int8 within 2 points of the float graph's test accuracy
and at most a third of its size; float TFLite agrees with the frozen graph
on every validation image.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import FLOWERS, WORK_DIR, machine, retrain_command, run_timed

THREADS = 2
LATENCY_CALLS = 100
BATCH = 32
CALIBRATION_IMAGES = 300


@dataclass
class Row:
    name: str
    size_mb: float
    load_s: float
    latency_ms: float
    images_per_s: float
    accuracy: float
    agreement: float
    validation_agreement: float


def measure(name: str, path: Path, splits: dict, reference: dict | None) -> tuple[Row, dict]:
    """Load ``path`` as label_image does and time it; returns the row and its top-1 answers per split."""
    from retrain.label.labeler import resolve_graph_config
    from retrain.models.model_file import load_model, model_size
    config = resolve_graph_config(path)
    normalization = (config.input_mean, config.input_std)
    started = time.perf_counter()
    model = load_model(path, num_threads=THREADS)
    model.predict(splits["test"][0][:1], normalization)
    load_s = time.perf_counter() - started
    single = splits["test"][0][:1]
    latencies = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        model.predict(single, normalization)
        latencies.append(time.perf_counter() - started)
    def top1(pixels: np.ndarray) -> np.ndarray:
        return np.concatenate([model.predict(pixels[i:i + BATCH], normalization).argmax(1)
                               for i in range(0, len(pixels), BATCH)])

    answers = {split: top1(pixels) for split, (pixels, _) in splits.items()}  # also warms up every batch shape
    started = time.perf_counter()
    top1(splits["test"][0])
    images_per_s = len(splits["test"][0]) / (time.perf_counter() - started)
    reference = reference or answers
    row = Row(name, model_size(path) / 1e6, load_s, statistics.median(latencies) * 1e3, images_per_s,
              float(np.mean(answers["test"] == splits["test"][1])),
              float(np.mean(answers["test"] == reference["test"])),
              float(np.mean(answers["validation"] == reference["validation"])))
    return row, answers


def main() -> None:
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from retrain.data.decode import decode_sample
    from retrain.data.images import labels_of, split_images
    from retrain.export.deploy import write_tflite_model
    from retrain.export.tflite import FLOAT_IO, QUANTIZE_MODES, tflite_name
    from retrain.graph_contract import Sidecar

    print(machine())
    out = WORK_DIR / "exports"
    retrain = run_timed(retrain_command(FLOWERS, out, "--random_seed", "0", "--saved_model_dir",
                                        str(out / "saved_model")))
    print(f"retrain: {retrain.seconds:.0f} s; " + next(line for line in retrain.stdout.splitlines()
                                                      if line.startswith("Final test accuracy")))
    graph = out / "graph.pb"
    records = split_images(FLOWERS)
    labels = labels_of(records)
    contract = Sidecar.read(graph)
    splits = {}
    for split in ("test", "validation"):
        chosen = [r for r in records if r.split == split]
        paths, pixels = decode_sample([r.path for r in chosen], len(chosen), contract.input_height,
                                      contract.input_width)
        label_of = {r.path: labels.index(r.label) for r in chosen}
        splits[split] = (pixels, np.array([label_of[p] for p in paths]))
    training_paths = [r.path for r in records if r.split == "train"]

    artifacts = {"frozen graph": graph, "SavedModel": out / "saved_model"}
    for mode in QUANTIZE_MODES:
        started = time.perf_counter()
        path = write_tflite_model(graph, out / f"graph_{mode}.tflite", contract, mode, FLOAT_IO, training_paths,
                                  CALIBRATION_IMAGES)
        print(f"converted {tflite_name(mode)} in {time.perf_counter() - started:.1f} s")
        artifacts[tflite_name(mode)] = path

    rows, reference = [], None
    for name, path in artifacts.items():
        row, answers = measure(name, path, splits, reference)
        reference = reference or answers
        rows.append(row)
    print(f"\n{len(splits['test'][1])} test images, {len(splits['validation'][1])} validation images, "
          f"{THREADS} threads")
    print("| format | size MB | load s | latency ms (median of 100) | batch img/s | test accuracy | "
          "test agreement | validation agreement |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r.name} | {r.size_mb:.1f} | {r.load_s:.2f} | {r.latency_ms:.1f} | {r.images_per_s:.0f} | "
              f"{r.accuracy * 100:.1f}% | {r.agreement * 100:.1f}% | {r.validation_agreement * 100:.1f}% |")
    by_name = {r.name: r for r in rows}
    graph_row, int8, float_tflite = by_name["frozen graph"], by_name["TFLite int8"], by_name["TFLite float"]
    accuracy_change = (int8.accuracy - graph_row.accuracy) * 100
    size_ratio = int8.size_mb / graph_row.size_mb
    met = accuracy_change >= -2 and size_ratio <= 1 / 3 and float_tflite.validation_agreement == 1.0
    print(f"RESULT exports: int8 test accuracy {int8.accuracy * 100:.1f}% vs float graph "
          f"{graph_row.accuracy * 100:.1f}% "
          f"({accuracy_change:+.1f} points), size {size_ratio:.2f}x of the graph; TFLite float agrees on "
          f"{float_tflite.validation_agreement * 100:.0f}% of validation images; "
          f"acceptance {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
