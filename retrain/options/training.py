"""The retrain tool's options for training: the loop, a stronger head, fine-tuning and distortions."""
from __future__ import annotations

from .option import Option

# Views per training image when only Poets' distortion flags are given (they used to mean per-step distortion).
DISTORTION_FLAG_COPIES = 4
# Fine-tuning steps when neither --fine_tune_steps nor --fine_tune_epochs is given.
FINE_TUNE_STEPS = 150

_TRAINING = "training"
_HEAD = ("a stronger head (each off by default: Poets' single softmax layer and plain gradient descent; with "
         "--fine_tune_blocks, --dropout, --label_smoothing, --weight_decay and --class_weight shape fine-tuning too)")
_FINE_TUNING = "fine-tuning (train the backbone's top blocks too, from activations cached below them)"
_DISTORTIONS = (f"distortions (what --augment_copies draws; on their own they mean --augment_copies "
                f"{DISTORTION_FLAG_COPIES})")
_RETRAIN = ("retrain",)

TRAINING = (
    Option("how_many_training_steps", 4000, "How many training steps to run.", _TRAINING, _RETRAIN,
           field="training.steps"),
    Option("learning_rate", 0.01, "Gradient descent learning rate.", _TRAINING, _RETRAIN,
           field="training.learning_rate"),
    Option("train_batch_size", 100, "Images per training step, drawn at random.", _TRAINING, _RETRAIN,
           field="training.train_batch_size"),
    Option("eval_step_interval", 10, "Evaluate on a validation batch every this many steps; about 20 of these "
           "evaluations are printed, all go to TensorBoard.", _TRAINING, _RETRAIN,
           field="training.eval_step_interval"),
    Option("validation_batch_size", 100, "Validation images per evaluation; -1 uses the whole validation set, which "
           "is more stable but slower on big datasets. The last evaluation and --early_stopping_patience always use "
           "the whole set.", _TRAINING, _RETRAIN, field="training.validation_batch_size"),
    Option("test_batch_size", -1, "Test images in the final evaluation; -1 (the default) uses the whole test set.",
           _TRAINING, _RETRAIN),
    Option("random_seed", None, "Seed for weight initialisation and batch sampling: two runs with the same seed give "
           "the same graph. (default: random)", _TRAINING, _RETRAIN, type=int, field="training.seed"),
    Option("calibrate", False, "After training, fit a temperature on the whole validation set and build it into "
           "the graph, so that a score of 0.8 is right about 80%% of the time; the top label never changes. The "
           "test report prints the expected calibration error (ECE) before and after.", _TRAINING, _RETRAIN),
    Option("unknown_quantile", 0.95, "Share of held-out photos of the known classes that pass the \"none of "
           "these\" score: after training, the distance of each image's features (scaled to unit length) to the "
           "nearest class (Mahalanobis, fitted on the training images) is exported as a second output, "
           "unknown_score, with a threshold set so this share of held-out images stays under it: the validation "
           "images and every training image scored by a fit without it. Higher flags fewer known photos wrongly but "
           "lets more photos of other things through; it costs a second or two and adds the class means and a DxD "
           "matrix (4 MB for 1024 features) to the model. 0 turns it off.", _TRAINING, _RETRAIN),
    Option("print_misclassified_test_images", False, "List every test image the final model gets wrong.", _TRAINING,
           _RETRAIN),
    Option("summaries_dir", "/tmp/retrain_logs", "TensorBoard summaries go to a new timestamped folder in here each "
           "run; view them with `tensorboard --logdir` on this folder.", _TRAINING, _RETRAIN),
)

HEAD = (
    Option("hidden_units", None, "Add a Dense+ReLU layer of this many units (e.g. 256) before the softmax; try it "
           "when training accuracy stays well below 100%%, or with thousands of images per class. (default: none)",
           _HEAD, _RETRAIN, type=int, field="training.hidden_units"),
    Option("dropout", 0.0, "Fraction (0 to under 1, e.g. 0.3) of the softmax layer's inputs zeroed at random each "
           "step; use it when training accuracy runs far ahead of validation accuracy (overfitting).", _HEAD,
           _RETRAIN, field="training.dropout"),
    Option("label_smoothing", 0.0, "Train towards 1-F for the true class instead of 1 (e.g. 0.1); use it when some "
           "labels are wrong or the model is over-confident.", _HEAD, _RETRAIN, field="training.label_smoothing"),
    Option("optimizer", "sgd", "sgd (Poets' plain gradient descent), momentum (0.9: faster at the same "
           "--learning_rate) or adam (adapts per weight; use --learning_rate 0.001; good with --hidden_units).",
           _HEAD, _RETRAIN, field="training.optimizer"),
    Option("learning_rate_schedule", "constant", "constant, or cosine: the learning rate falls smoothly to 0 at the "
           "last step; use cosine for long runs, to settle into the final weights.", _HEAD, _RETRAIN,
           field="training.learning_rate_schedule"),
    Option("weight_decay", 0.0, "Shrink every weight by learning_rate * this each step (decoupled, as AdamW; e.g. "
           "1e-4); a regulariser for few images or a --hidden_units layer.", _HEAD, _RETRAIN,
           field="training.weight_decay"),
    Option("class_weight", "none", "none, or balanced: weigh each class's loss by its inverse frequency; use it when "
           "the largest class has many times the images of the smallest (the run warns beyond 5x).", _HEAD, _RETRAIN,
           field="training.class_weight"),
    Option("early_stopping_patience", None, "Stop when the loss on the whole validation set has not improved for "
           "this many evaluations (one per --eval_step_interval steps) and keep the best weights; use it to stop a "
           "generous --how_many_training_steps in time. With --fine_tune_blocks it also judges fine-tuning, once per "
           "progress line (a tenth of --fine_tune_steps), and restores its best blocks and head, the untouched ones "
           "included. (default: off)", _HEAD, _RETRAIN, type=int, field="training.early_stopping_patience"),
)

FINE_TUNING = (
    Option("recipe", "none", "none (Poets' head and the flags as given), or best: set, for --architecture, the "
           "fine-tuning choices that measured best (top blocks, cached views, passes, learning rate and schedule, "
           "weight decay; the run prints what it set, and every flag you give wins), fine-tune, then keep the "
           "fine-tuned model only if it beats the head alone on the whole validation set by more than chance (an "
           "exact paired McNemar test on the same images, p < 0.05); otherwise export the head alone and say so. It "
           "needs validation images (--validation_percentage above 0).", _FINE_TUNING, _RETRAIN),
    Option("fine_tune_blocks", 0, "Also retrain the backbone's top N blocks (0: only the new layer, as Poets). Try "
           "it on larger datasets when the linear layer is not accurate enough (on 600 flower photos it was not "
           "better: see the README); it costs minutes more. Each image runs once through the frozen part below those "
           "blocks and its activations are cached: H*W*C float16 values per image and view, e.g. for "
           "mobilenet_1.0_224 98 KiB at 1 block, 196 KiB at 2 to 7, 392 KiB at 8 and 9; the run prints its estimate "
           "before it starts. --list_architectures shows how many blocks each backbone has.", _FINE_TUNING, _RETRAIN,
           field="fine_tune.blocks"),
    Option("fine_tune_learning_rate", 2e-5, "Adam learning rate for the top blocks and the head after the head alone "
           "has been trained; keep it small so the pretrained weights are only nudged. Fine-tuning uses Adam "
           "whatever --optimizer says, with its own rate, --fine_tune_schedule and --fine_tune_warmup; "
           "--weight_decay shrinks the blocks' convolution kernels and the head's weights, not biases or batch-norm "
           "scales and offsets.", _FINE_TUNING, _RETRAIN, field="fine_tune.learning_rate"),
    Option("fine_tune_steps", None, "Fine-tuning steps, each on --fine_tune_batch_size cached rows; given, it wins "
           f"over --fine_tune_epochs. (default: {FINE_TUNE_STEPS}, or what --fine_tune_epochs asks for)", _FINE_TUNING,
           _RETRAIN, type=int, field="fine_tune.steps"),
    Option("fine_tune_epochs", None, "Fine-tuning budget in passes over the cached training rows, views included "
           "(e.g. 4): steps = passes * rows / --fine_tune_batch_size, rounded up, so the budget grows with the data. "
           f"(default: none, {FINE_TUNE_STEPS} steps)", _FINE_TUNING, _RETRAIN, type=float, field="fine_tune.epochs"),
    Option("fine_tune_schedule", "constant", "Fine-tuning learning rate: constant, or cosine (falls smoothly to 0 at "
           "the last step, after the warm-up).", _FINE_TUNING, _RETRAIN, field="fine_tune.schedule"),
    Option("fine_tune_warmup", 0.0, "Fraction of the fine-tuning steps (0 to under 1, e.g. 0.05) over which the "
           "learning rate rises linearly to --fine_tune_learning_rate before its schedule starts.", _FINE_TUNING,
           _RETRAIN, field="fine_tune.warmup"),
    Option("fine_tune_batch_size", 32, "Cached rows (images or views) per fine-tuning step.", _FINE_TUNING, _RETRAIN,
           field="fine_tune.batch_size"),
    Option("augment_copies", 0, "Cache K distorted views of every training image (never of validation or test "
           "images), drawn once with the distortion flags below (or mild defaults), the same on every run for a "
           "--random_seed. It made fine-tuning 1 point more accurate on 600 flower photos (not the linear layer); "
           "costs K times the training images' cache.", _FINE_TUNING, _RETRAIN),
)

DISTORTIONS = (
    Option("flip_left_right", False, "Randomly mirror half of the training images horizontally.", _DISTORTIONS,
           _RETRAIN, field="distortions.flip_left_right"),
    Option("random_crop", 0.0, "Percentage margin to crop randomly around the training images.", _DISTORTIONS,
           _RETRAIN, field="distortions.random_crop"),
    Option("random_scale", 0.0, "Percentage by which to randomly enlarge training images.", _DISTORTIONS, _RETRAIN,
           field="distortions.random_scale"),
    Option("random_brightness", 0.0, "Percentage by which to randomly brighten or darken training images.",
           _DISTORTIONS, _RETRAIN, field="distortions.random_brightness"),
    Option("random_resized_crop", 0.0, "Instead of --random_crop and --random_scale, crop each view to a random "
           "share of the image's area, from this fraction (e.g. 0.25; torchvision's and timm's 0.08 is for training "
           "from scratch) to all of it, with an aspect ratio from 3/4 to 4/3 drawn log-uniformly, resized to the "
           "network's input: the random-resized crop of torchvision's RandomResizedCrop and timm (after 10 draws "
           "that do not fit, the centre crop). 0 turns it off.", _DISTORTIONS, _RETRAIN, metavar="MIN_AREA",
           field="distortions.random_resized_crop"),
    Option("color_jitter", 0.0, "Scale each view's brightness, contrast and saturation by random factors from 1-S "
           "to 1+S, applied in a random order, as torchvision's ColorJitter (timm's default is 0.4). 0 turns it off.",
           _DISTORTIONS, _RETRAIN, metavar="S", field="distortions.color_jitter"),
)
