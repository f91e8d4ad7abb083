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
from functools import partial
from typing import Sequence

from retrain.models.architectures import ARCHITECTURES, DEFAULT_ARCHITECTURE, HUB_IMAGE_SIZE
from retrain.cache.views import DISTORTION_FLAG_COPIES
from retrain.data.distortions import Distortions
from retrain.training.finetune import FineTuneConfig
from retrain.training.head import TrainingConfig
from retrain.pipeline import RetrainOptions, run_retrain
from retrain.cli.common import (BACKBONE_HELP, BOTTLENECK_HELP, HOSTILE_INPUT_HELP, add_flags, backbone_spec, default_of,
                          run_cli)

option = partial(default_of, RetrainOptions)
training = partial(default_of, TrainingConfig)
distortion = partial(default_of, Distortions)
fine_tuning = partial(default_of, FineTuneConfig)

# Each flag's default: its options field's default, written once in the library (False makes a switch).
DEFAULTS = {
    "--image_dir": "",
    "--testing_percentage": option("testing_percentage"),
    "--validation_percentage": option("validation_percentage"),
    "--architecture": DEFAULT_ARCHITECTURE,
    "--tfhub_module": "",
    "--tfhub_image_size": HUB_IMAGE_SIZE,
    "--model_dir": option("model_dir"),
    "--list_architectures": False,
    "--bottleneck_dir": option("bottleneck_dir"),
    "--bottleneck_batch_size": option("bottleneck_batch_size"),
    "--memory_budget_gb": option("memory_budget_gb"),
    "--how_many_training_steps": training("steps"),
    "--learning_rate": training("learning_rate"),
    "--train_batch_size": training("train_batch_size"),
    "--eval_step_interval": training("eval_step_interval"),
    "--validation_batch_size": training("validation_batch_size"),
    "--test_batch_size": option("test_batch_size"),
    "--random_seed": training("seed"),
    "--hidden_units": training("hidden_units"),
    "--dropout": training("dropout"),
    "--label_smoothing": training("label_smoothing"),
    "--optimizer": training("optimizer"),
    "--learning_rate_schedule": training("learning_rate_schedule"),
    "--weight_decay": training("weight_decay"),
    "--class_weight": training("class_weight"),
    "--early_stopping_patience": training("early_stopping_patience"),
    "--print_misclassified_test_images": False,
    "--summaries_dir": option("summaries_dir"),
    "--fine_tune_blocks": fine_tuning("blocks"),
    "--fine_tune_learning_rate": fine_tuning("learning_rate"),
    "--fine_tune_steps": fine_tuning("steps"),
    "--fine_tune_batch_size": fine_tuning("batch_size"),
    "--augment_copies": option("augment_copies"),
    "--flip_left_right": False,
    "--random_crop": distortion("random_crop"),
    "--random_scale": distortion("random_scale"),
    "--random_brightness": distortion("random_brightness"),
    "--output_graph": option("output_graph"),
    "--output_labels": option("output_labels"),
    "--final_tensor_name": option("final_tensor_name"),
    "--intermediate_output_graphs_dir": option("intermediate_output_graphs_dir"),
    "--intermediate_store_frequency": option("intermediate_store_frequency"),
    "--saved_model_dir": option("saved_model_dir"),
    "--plot_history": option("plot_history"),
    "--max_image_megapixels": option("max_image_megapixels"),
    "--trust_graph": option("trust_graph"),
    "--html": option("html"),
    "--output_tflite": option("output_tflite"),
    "--quantize": option("quantize"),
    "--quantize_samples": option("quantize_samples"),
    "--tflite_io": option("tflite_io"),
    "--export_check_samples": option("export_check_samples"),
}

# Poets' flag names, grouped as --help shows them, with what each one is for.
HELP = {
    "images and split": {
        "--image_dir": "Folder of labelled images: one sub-folder per class, named after the class. "
                       "jpg, jpeg, png, bmp, gif, tif, tiff and webp in any letter case, searched recursively.",
        "--testing_percentage": "Percentage of images held out as the test set, scored once at the end.",
        "--validation_percentage": "Percentage of images used to check accuracy during training. The split comes "
                                   "from a hash of each file name, so adding images never moves old ones.",
    },
    "backbone": {
        **BACKBONE_HELP,
        "--list_architectures": "List every --architecture and exit.",
    },
    "bottleneck cache": {
        **BOTTLENECK_HELP,
        "--memory_budget_gb": "Memory for holding bottlenecks during training. Beyond "
                              "it they are streamed from --bottleneck_dir in large "
                              "chunks instead.",
    },
    "training": {
        "--how_many_training_steps": "How many training steps to run.",
        "--learning_rate": "Gradient descent learning rate.",
        "--train_batch_size": "Images per training step, drawn at random.",
        "--eval_step_interval": "Evaluate on a validation batch every this many steps; about 20 of these "
                                "evaluations are printed, all go to TensorBoard.",
        "--validation_batch_size": "Validation images per evaluation; -1 uses the whole validation set, which is "
                                   "more stable but slower on big datasets. The last evaluation and "
                                   "--early_stopping_patience always use the whole set.",
        "--test_batch_size": "Test images in the final evaluation; -1 (the default) uses the whole test set.",
        "--random_seed": "Seed for weight initialisation and batch sampling: two runs with the "
                         "same seed give the same graph. (default: random)",
        "--print_misclassified_test_images": "List every test image the final model gets wrong.",
        "--summaries_dir": "TensorBoard summaries go to a new timestamped folder in here each run; view them with "
                           "`tensorboard --logdir` on this folder.",
    },
    "a stronger head (each off by default: Poets' single softmax layer and plain gradient descent)": {
        "--hidden_units": "Add a Dense+ReLU layer of this many units (e.g. 256) before the softmax; try it when "
                          "training accuracy stays well below 100%%, or with thousands of images per class. "
                          "(default: none)",
        "--dropout": "Fraction (0 to under 1, e.g. 0.3) of the softmax layer's inputs zeroed at random each step; "
                     "use it when training accuracy runs far ahead of validation accuracy (overfitting).",
        "--label_smoothing": "Train towards 1-F for the true class instead of 1 (e.g. 0.1); use it when some "
                             "labels are wrong or the model is over-confident.",
        "--optimizer": "sgd (Poets' plain gradient descent), momentum (0.9: faster at the same --learning_rate) "
                       "or adam (adapts per weight; use --learning_rate 0.001; good with --hidden_units).",
        "--learning_rate_schedule": "constant, or cosine: the learning rate falls smoothly to 0 at the last step; "
                                    "use cosine for long runs, to settle into the final weights.",
        "--weight_decay": "Shrink every weight by learning_rate * this each step (decoupled, as AdamW; e.g. 1e-4); "
                          "a regulariser for few images or a --hidden_units layer.",
        "--class_weight": "none, or balanced: weigh each class's loss by its inverse frequency; use it when the "
                          "largest class has many times the images of the smallest (the run warns beyond 5x).",
        "--early_stopping_patience": "Stop when the loss on the whole validation set has not improved for this "
                                     "many evaluations (one per --eval_step_interval steps) and keep the best "
                                     "weights; use it to stop a generous --how_many_training_steps in time. "
                                     "With --fine_tune_blocks it also judges fine-tuning, once per progress line "
                                     "(a tenth of --fine_tune_steps), and restores its best blocks and head, "
                                     "the untouched ones included. "
                                     "(default: off)",
    },
    "fine-tuning (train the backbone's top blocks too, from activations cached below them)": {
        "--fine_tune_blocks": "Also retrain the backbone's top N blocks (0: only the new layer, as Poets). Try it "
                              "on larger datasets when the linear layer is not accurate enough (on 600 flower photos "
                              "it was not better: see the README); it costs minutes more. Each "
                              "image runs once through the frozen part below those blocks and its activations are "
                              "cached: H*W*C float16 values per image and view, e.g. for mobilenet_1.0_224 98 KiB "
                              "at 1 block, 196 KiB at 2 to 7, 392 KiB at 8 and 9; the run prints its estimate "
                              "before it starts. --list_architectures shows how many blocks each backbone has.",
        "--fine_tune_learning_rate": "Adam learning rate for the top blocks and the head after the head alone "
                                     "has been trained; keep it small so the pretrained weights are only nudged.",
        "--fine_tune_steps": "Fine-tuning steps, each on --fine_tune_batch_size cached rows.",
        "--fine_tune_batch_size": "Cached rows (images or views) per fine-tuning step.",
        "--augment_copies": "Cache K distorted views of every training image (never of validation or test "
                            "images), drawn once with the distortion flags below (or mild defaults), the same on "
                            "every run for a --random_seed. It made fine-tuning 1 point more accurate on 600 "
                            "flower photos (not the linear layer); costs K times the training images' cache.",
    },
    f"distortions (what --augment_copies draws; on their own they mean --augment_copies {DISTORTION_FLAG_COPIES})": {
        "--flip_left_right": "Randomly mirror half of the training images horizontally.",
        "--random_crop": "Percentage margin to crop randomly around the training images.",
        "--random_scale": "Percentage by which to randomly enlarge training images.",
        "--random_brightness": "Percentage by which to randomly brighten or darken training images.",
    },
    "outputs": {
        "--output_graph": "Where to save the trained frozen graph. A JSON sidecar with the "
                          "input size, mean, std and labels is written beside it.",
        "--output_labels": "Where to save the labels, one per line in the graph's output order.",
        "--final_tensor_name": "Name of the softmax output tensor in the graph.",
        "--intermediate_output_graphs_dir": "Where intermediate graphs go when --intermediate_store_frequency is "
                                            "set.",
        "--intermediate_store_frequency": "Also save the graph every this many steps; 0 (the default) saves only "
                                          "the final one.",
        "--saved_model_dir": "Also export a TF2 SavedModel here (signature "
                             "serving_default: input -> final_result).",
        "--plot_history": "Save training and validation accuracy and loss against step to this .png, .pdf or "
                          ".svg file, the early-stopping point marked; use it to see over- or underfitting.",
        "--html": "Also write an HTML report on the test set here (index.html plus thumbnails; opens from disk): "
                  "scores, confusion matrix, training curves and the misclassified images with Grad-CAM.",
    },
    "hostile inputs": HOSTILE_INPUT_HELP,
    "deploy (every written model is checked against the trained one before the run says Wrote)": {
        "--output_tflite": "Also write a TFLite model here, with the frozen graph's contract (input 'input' "
                           "normalised as the sidecar says, output 'final_result' in labels order).",
        "--quantize": "How to shrink the TFLite model: none, float16 (half the size), dynamic (int8 weights) or "
                      "int8 (integers throughout, calibrated on training images).",
        "--quantize_samples": "Training images decoded once to calibrate --quantize int8.",
        "--tflite_io": "Input and output type of an int8 model: float, or uint8 for microcontrollers and Edge TPU "
                       "(quantised with the tensors' own scale and zero point).",
        "--export_check_samples": "Validation images each written model is run on and compared with the trained "
                                  "model: float ones must agree on every image.",
    },
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.retrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, HELP, DEFAULTS)
    return parser


def options_from_args(args: argparse.Namespace) -> RetrainOptions:
    """The options the flags describe; the options' own checks turn bad values into one-line errors."""
    return RetrainOptions(
        image_dir=args.image_dir, architecture=backbone_spec(args), output_graph=args.output_graph,
        output_labels=args.output_labels, summaries_dir=args.summaries_dir, model_dir=args.model_dir,
        bottleneck_dir=args.bottleneck_dir,
        training=TrainingConfig(steps=args.how_many_training_steps, learning_rate=args.learning_rate,
                                train_batch_size=args.train_batch_size,
                                validation_batch_size=args.validation_batch_size,
                                eval_step_interval=args.eval_step_interval, seed=args.random_seed,
                                hidden_units=args.hidden_units, dropout=args.dropout,
                                label_smoothing=args.label_smoothing, optimizer=args.optimizer,
                                learning_rate_schedule=args.learning_rate_schedule, weight_decay=args.weight_decay,
                                class_weight=args.class_weight,
                                early_stopping_patience=args.early_stopping_patience),
        testing_percentage=args.testing_percentage, validation_percentage=args.validation_percentage,
        test_batch_size=args.test_batch_size, print_misclassified_test_images=args.print_misclassified_test_images,
        final_tensor_name=args.final_tensor_name,
        intermediate_output_graphs_dir=args.intermediate_output_graphs_dir,
        intermediate_store_frequency=args.intermediate_store_frequency,
        distortions=Distortions(args.flip_left_right, args.random_crop, args.random_scale, args.random_brightness),
        saved_model_dir=args.saved_model_dir, bottleneck_batch_size=args.bottleneck_batch_size,
        memory_budget_gb=args.memory_budget_gb, plot_history=args.plot_history,
        max_image_megapixels=args.max_image_megapixels, trust_graph=args.trust_graph, html=args.html,
        fine_tune=FineTuneConfig(args.fine_tune_blocks, args.fine_tune_learning_rate, args.fine_tune_steps,
                                 args.fine_tune_batch_size),
        augment_copies=args.augment_copies,
        output_tflite=args.output_tflite, quantize=args.quantize, quantize_samples=args.quantize_samples,
        tflite_io=args.tflite_io, export_check_samples=args.export_check_samples)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_architectures:
        for spec in ARCHITECTURES.values():
            alias = f"  (= {spec.alias_of})" if spec.alias_of else ""
            blocks = f"{len(spec.fine_tune_cuts):2} blocks"
            print(f"{spec.name:28} {spec.input_size}x{spec.input_size}  {spec.feature_size}-d  {blocks}  "
                  f"{spec.source}{alias}")
        return 0
    run_retrain(options_from_args(args))
    return 0


def cli() -> None:
    """Console-script entry point."""
    run_cli(main, sys.argv[1:])


if __name__ == "__main__":
    cli()
