"""Retrain the top layer of an ImageNet network to recognise your own classes.

Point --image_dir at a folder with one sub-folder of photos per class:

    flower_photos/daisy/*.jpg
    flower_photos/roses/*.jpg
    ...

Every image goes through the frozen, pretrained network once; its bottleneck
(the network's pooled features) is cached under --bottleneck_dir, so later
runs on the same images skip straight to training. Only a new softmax layer
is trained. The result is a frozen graph (input tensor 'input', output
'final_result', as TensorFlow-for-Poets made) plus a labels file, ready for
`python -m scripts.label_image`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from retrain.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, get_architecture, tfhub_spec
from retrain.bottlenecks import DEFAULT_MEMORY_BUDGET_GB
from retrain.distortions import Distortions
from retrain.errors import UserError, run_cli
from retrain.head import TrainingConfig
from retrain.paths import DEFAULT_BOTTLENECK_DIR, DEFAULT_MODEL_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("images and split")
    data.add_argument("--image_dir", type=str, default="",
                      help="Folder of labelled images: one sub-folder per class, named after the class. "
                           "jpg, jpeg, png, bmp and gif in any letter case, searched recursively.")
    data.add_argument("--testing_percentage", type=float, default=10,
                      help="Percentage of images held out as the test set, scored once at the end. (default 10)")
    data.add_argument("--validation_percentage", type=float, default=10,
                      help="Percentage of images used to check accuracy during training. The split comes from a "
                           "hash of each file name, so adding images never moves old ones. (default 10)")

    model = parser.add_argument_group("backbone")
    model.add_argument("--architecture", type=str, default=DEFAULT_ARCHITECTURE,
                       help="Pretrained network to build on. mobilenet_<1.0|0.75|0.50|0.25>_<224|192|160|128>"
                            "[_quantized] are small and fast; bigger ones (inception_v3, inception_v4, mobilenetv2, "
                            "resnet50, vgg16) can be more accurate but are slower. --list_architectures shows all. "
                            f"(default {DEFAULT_ARCHITECTURE}, bundled, works offline)")
    model.add_argument("--tfhub_module", type=str, default="",
                       help="Use a TF-Hub image feature-vector module instead of --architecture: a URL or the "
                            "folder of a downloaded SavedModel. Images are fed as floats in [0, 1].")
    model.add_argument("--tfhub_image_size", type=int, default=224,
                       help="Input height and width of the --tfhub_module. (default 224)")
    model.add_argument("--model_dir", type=str, default=str(DEFAULT_MODEL_DIR),
                       help="Where backbone files are downloaded to and looked for. A file already there is used "
                            "without touching the network. (default: the project's models/)")
    model.add_argument("--list_architectures", action="store_true", help="List every --architecture and exit.")

    cache = parser.add_argument_group("bottleneck cache")
    cache.add_argument("--bottleneck_dir", type=str, default=str(DEFAULT_BOTTLENECK_DIR),
                       help="Where bottleneck vectors are cached, per architecture and image content: an edited "
                            "image is recomputed, a renamed one is not. (default: the project's bottlenecks/)")
    cache.add_argument("--bottleneck_batch_size", type=int, default=16,
                       help="Images per backbone call while computing bottlenecks. (default 16; 32 was slower for "
                            "MobileNet on a 2-core CPU, see benchmarks/README.md)")
    cache.add_argument("--memory_budget_gb", type=float, default=DEFAULT_MEMORY_BUDGET_GB,
                       help="Memory for holding bottlenecks during training. Beyond it they are streamed from "
                            f"--bottleneck_dir in large chunks instead. (default {DEFAULT_MEMORY_BUDGET_GB:g})")

    train = parser.add_argument_group("training")
    train.add_argument("--how_many_training_steps", type=int, default=4000,
                       help="How many training steps to run. (default 4000)")
    train.add_argument("--learning_rate", type=float, default=0.01,
                       help="Gradient descent learning rate. (default 0.01)")
    train.add_argument("--train_batch_size", type=int, default=100,
                       help="Images per training step, drawn at random. (default 100)")
    train.add_argument("--eval_step_interval", type=int, default=10,
                       help="Evaluate on a validation batch every this many steps; about 20 of these "
                            "evaluations are printed, all go to TensorBoard. (default 10)")
    train.add_argument("--validation_batch_size", type=int, default=100,
                       help="Validation images per evaluation; -1 uses the whole validation set, which is more "
                            "stable but slower on big datasets. (default 100)")
    train.add_argument("--test_batch_size", type=int, default=-1,
                       help="Test images in the final evaluation; -1 (default) uses the whole test set.")
    train.add_argument("--random_seed", type=int, default=None,
                       help="Seed for weight initialisation and batch sampling: two runs with the same seed give "
                            "the same graph. (default: random)")
    train.add_argument("--print_misclassified_test_images", action="store_true",
                       help="List every test image the final model gets wrong.")
    train.add_argument("--summaries_dir", type=str, default="/tmp/retrain_logs",
                       help="TensorBoard summaries go to a new timestamped folder in here each run; view them with "
                            "`tensorboard --logdir` on this folder. (default /tmp/retrain_logs)")

    distort = parser.add_argument_group(
        "distortions (each training image is distorted afresh every step, so the cache can't be used: much slower)")
    distort.add_argument("--flip_left_right", action="store_true",
                         help="Randomly mirror half of the training images horizontally.")
    distort.add_argument("--random_crop", type=float, default=0,
                         help="Percentage margin to crop randomly around the training images. (default 0)")
    distort.add_argument("--random_scale", type=float, default=0,
                         help="Percentage by which to randomly enlarge training images. (default 0)")
    distort.add_argument("--random_brightness", type=float, default=0,
                         help="Percentage by which to randomly brighten or darken training images. (default 0)")

    out = parser.add_argument_group("outputs")
    out.add_argument("--output_graph", type=str, default="/tmp/output_graph.pb",
                     help="Where to save the trained frozen graph. A JSON sidecar with the input size, mean, std "
                          "and labels is written beside it. (default /tmp/output_graph.pb)")
    out.add_argument("--output_labels", type=str, default="/tmp/output_labels.txt",
                     help="Where to save the labels, one per line in the graph's output order. "
                          "(default /tmp/output_labels.txt)")
    out.add_argument("--final_tensor_name", type=str, default="final_result",
                     help="Name of the softmax output tensor in the graph. (default final_result)")
    out.add_argument("--intermediate_output_graphs_dir", type=str, default="/tmp/intermediate_graph/",
                     help="Where intermediate graphs go when --intermediate_store_frequency is set.")
    out.add_argument("--intermediate_store_frequency", type=int, default=0,
                     help="Also save the graph every this many steps; 0 (default) saves only the final one.")
    out.add_argument("--saved_model_dir", type=str, default="",
                     help="Also export a TF2 SavedModel here (signature serving_default: input -> final_result).")
    return parser


def options_from_args(args: argparse.Namespace):
    from retrain.pipeline import RetrainOptions
    spec = tfhub_spec(args.tfhub_module, args.tfhub_image_size) if args.tfhub_module else \
        get_architecture(args.architecture)
    for flag in ("how_many_training_steps", "train_batch_size", "eval_step_interval", "bottleneck_batch_size"):
        if getattr(args, flag) < 1 and not (flag == "train_batch_size" and getattr(args, flag) == -1):
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.learning_rate <= 0:
        raise UserError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.memory_budget_gb <= 0:
        raise UserError(f"--memory_budget_gb must be positive, got {args.memory_budget_gb}")
    return RetrainOptions(
        image_dir=args.image_dir, architecture=spec, output_graph=args.output_graph,
        output_labels=args.output_labels, summaries_dir=args.summaries_dir, model_dir=args.model_dir,
        bottleneck_dir=args.bottleneck_dir,
        training=TrainingConfig(steps=args.how_many_training_steps, learning_rate=args.learning_rate,
                                train_batch_size=args.train_batch_size,
                                validation_batch_size=args.validation_batch_size,
                                eval_step_interval=args.eval_step_interval, seed=args.random_seed),
        testing_percentage=args.testing_percentage, validation_percentage=args.validation_percentage,
        test_batch_size=args.test_batch_size, print_misclassified_test_images=args.print_misclassified_test_images,
        final_tensor_name=args.final_tensor_name,
        intermediate_output_graphs_dir=args.intermediate_output_graphs_dir,
        intermediate_store_frequency=args.intermediate_store_frequency,
        distortions=Distortions(args.flip_left_right, args.random_crop, args.random_scale, args.random_brightness),
        saved_model_dir=args.saved_model_dir, bottleneck_batch_size=args.bottleneck_batch_size,
        memory_budget_gb=args.memory_budget_gb)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_architectures:
        for spec in ARCHITECTURES.values():
            print(f"{spec.name:28} {spec.input_size}x{spec.input_size}  {spec.feature_size}-d  {spec.source}")
        return 0
    options = options_from_args(args)
    from retrain.pipeline import run_retrain
    run_retrain(options)
    return 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
