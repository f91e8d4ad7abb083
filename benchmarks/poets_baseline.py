"""A TensorFlow-for-Poets-style retrain, kept only as the yardstick for the warm-run benchmark.

It does what Poets' ``retrain.py`` did, step for step, on the same backbone
(frozen MobileNet v1, 1024-d pooled features) and the same split:

* bottlenecks: one ``Session.run`` to decode and resize each JPEG and one for
  the backbone, per image, each vector saved as a text file of
  comma-separated floats (``<bottleneck_dir>/<label>/<image>.txt``);
* every run first visits every image's text file (Poets' ``cache_bottlenecks``);
* training: each step reads its 100 random bottlenecks from their text files,
  runs the train op and the merged summaries and writes them; every
  evaluation reads 100 validation files;
* the test set is read from its files and the graph frozen and written.

Not shipped as a feature: it exists so "15x faster than Poets" is measured,
not claimed. Run: ``python -m benchmarks.poets_baseline --image_dir DIR --bottleneck_dir DIR --output_graph G``.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np

from retrain.data.images import labels_of, split_images
from retrain.files import DEFAULT_MODEL_DIR
from retrain.models.architectures import get_architecture


def bottleneck_path(bottleneck_dir: Path, record) -> Path:
    return bottleneck_dir / record.label / f"{record.path.name}_{record.path.parent.name}.txt"


def build_graph(tf, spec, graph_def, class_count: int, learning_rate: float):
    """Poets' graph: JPEG decoding, the backbone, and the final layer with its summaries."""
    jpeg = tf.compat.v1.placeholder(tf.string, name="DecodeJPGInput")
    decoded = tf.cast(tf.image.decode_jpeg(jpeg, channels=3), tf.float32)
    resized = tf.compat.v1.image.resize_bilinear(decoded[tf.newaxis], [spec.input_size, spec.input_size])
    normalized = (resized - spec.input_mean) / spec.input_std
    features, = tf.compat.v1.import_graph_def(graph_def, input_map={spec.input_tensor: normalized},
                                             return_elements=[spec.feature_tensor], name="backbone")
    bottleneck = tf.reshape(features, [-1, spec.feature_size])
    bottleneck_input = tf.compat.v1.placeholder(tf.float32, [None, spec.feature_size], name="BottleneckInput")
    ground_truth = tf.compat.v1.placeholder(tf.float32, [None, class_count], name="GroundTruthInput")
    weights = tf.Variable(tf.random.truncated_normal([spec.feature_size, class_count], stddev=0.001))
    biases = tf.Variable(tf.zeros([class_count]))
    logits = tf.matmul(bottleneck_input, weights) + biases
    final = tf.nn.softmax(logits, name="final_result")
    cross_entropy = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=ground_truth, logits=logits))
    tf.compat.v1.summary.scalar("cross_entropy", cross_entropy)
    train_step = tf.compat.v1.train.GradientDescentOptimizer(learning_rate).minimize(cross_entropy)
    correct = tf.equal(tf.argmax(final, 1), tf.argmax(ground_truth, 1))
    accuracy = tf.reduce_mean(tf.cast(correct, tf.float32))
    tf.compat.v1.summary.scalar("accuracy", accuracy)
    return dict(jpeg=jpeg, bottleneck=bottleneck, bottleneck_input=bottleneck_input, ground_truth=ground_truth,
                train_step=train_step, cross_entropy=cross_entropy, accuracy=accuracy,
                merged=tf.compat.v1.summary.merge_all())


def get_or_create_bottleneck(session, graph, record, bottleneck_dir: Path) -> list[float]:
    """Poets' per-image cache: read the text file, or run two session calls and write it."""
    path = bottleneck_path(bottleneck_dir, record)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        values = session.run(graph["bottleneck"], {graph["jpeg"]: record.path.read_bytes()})[0]
        path.write_text(",".join(str(x) for x in values))
    return [float(x) for x in path.read_text().split(",")]


def random_bottlenecks(session, graph, records, bottleneck_dir, count, class_count, index_of):
    """Poets' get_random_cached_bottlenecks: ``count`` random files read (or all, with -1)."""
    chosen = records if count < 0 else [random.choice(records) for _ in range(count)]
    vectors, truths = [], []
    for record in chosen:
        vectors.append(get_or_create_bottleneck(session, graph, record, bottleneck_dir))
        truth = np.zeros(class_count, np.float32)
        truth[index_of[record.label]] = 1.0
        truths.append(truth)
    return vectors, truths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--bottleneck_dir", required=True)
    parser.add_argument("--output_graph", required=True)
    parser.add_argument("--summaries_dir", default="/tmp/poets_baseline_logs")
    parser.add_argument("--how_many_training_steps", type=int, default=4000)
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--train_batch_size", type=int, default=100)
    parser.add_argument("--validation_batch_size", type=int, default=100)
    parser.add_argument("--eval_step_interval", type=int, default=10)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()

    spec = get_architecture("mobilenet_1.0_224")
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((DEFAULT_MODEL_DIR / spec.model_file).read_bytes())
    records = split_images(args.image_dir, 10, 10)
    labels = labels_of(records)
    index_of = {label: i for i, label in enumerate(labels)}
    split = {name: [r for r in records if r.split == name] for name in ("train", "validation", "test")}
    bottleneck_dir = Path(args.bottleneck_dir)
    with tf.compat.v1.Session() as session:
        graph = build_graph(tf, spec, graph_def, len(labels), args.learning_rate)
        for record in records:  # Poets' cache_bottlenecks: visit every image's file on every run
            get_or_create_bottleneck(session, graph, record, bottleneck_dir)
        train_writer = tf.compat.v1.summary.FileWriter(os.path.join(args.summaries_dir, "train"), session.graph)
        validation_writer = tf.compat.v1.summary.FileWriter(os.path.join(args.summaries_dir, "validation"))
        session.run(tf.compat.v1.global_variables_initializer())
        for step in range(args.how_many_training_steps):
            vectors, truths = random_bottlenecks(session, graph, split["train"], bottleneck_dir,
                                                 args.train_batch_size, len(labels), index_of)
            feed = {graph["bottleneck_input"]: vectors, graph["ground_truth"]: truths}
            summary, _ = session.run([graph["merged"], graph["train_step"]], feed)
            train_writer.add_summary(summary, step)
            last = step + 1 == args.how_many_training_steps
            if step % args.eval_step_interval == 0 or last:
                train_accuracy, cross_entropy = session.run([graph["accuracy"], graph["cross_entropy"]], feed)
                vectors, truths = random_bottlenecks(session, graph, split["validation"], bottleneck_dir,
                                                     args.validation_batch_size, len(labels), index_of)
                summary, validation_accuracy = session.run(
                    [graph["merged"], graph["accuracy"]],
                    {graph["bottleneck_input"]: vectors, graph["ground_truth"]: truths})
                validation_writer.add_summary(summary, step)
                print(f"Step {step}: train accuracy = {train_accuracy * 100:.1f}%, cross entropy = "
                      f"{cross_entropy:f}, validation accuracy = {validation_accuracy * 100:.1f}%")
        vectors, truths = random_bottlenecks(session, graph, split["test"], bottleneck_dir, -1, len(labels), index_of)
        test_accuracy = session.run(graph["accuracy"],
                                    {graph["bottleneck_input"]: vectors, graph["ground_truth"]: truths})
        print(f"Final test accuracy = {test_accuracy * 100:.1f}% (N={len(vectors)})")
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(session, session.graph.as_graph_def(),
                                                                        ["final_result"])
        Path(args.output_graph).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_graph).write_bytes(frozen.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
