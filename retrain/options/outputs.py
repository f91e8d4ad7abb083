"""The options that say what comes out: retrain's outputs and deploy files, and each labelling tool's own."""
from __future__ import annotations

from ..graph_contract import FINAL_TENSOR_NAME
from .option import Option

_OUTPUTS = "outputs"
_DEPLOY = "deploy (every written model is checked against the model it was made from before it counts as written)"
_GRADCAM = "Grad-CAM"
_OPTIMISATION = "optimisation (pixels scaled to [-1, 1]; penalty weights relative to a unit ascent step)"
_RETRAIN, _EXPORTERS, _VISUALIZE = ("retrain",), ("retrain", "export"), ("visualize_filters",)

OUTPUTS = (
    Option("output_graph", "/tmp/output_graph.pb", "Where to save the trained frozen graph. A JSON sidecar with the "
           "input size, mean, std and labels is written beside it.", _OUTPUTS, _RETRAIN),
    Option("output_labels", "/tmp/output_labels.txt", "Where to save the labels, one per line in the graph's output "
           "order.", _OUTPUTS, _RETRAIN),
    Option("final_tensor_name", FINAL_TENSOR_NAME, "Name of the softmax output tensor in the graph.", _OUTPUTS,
           _RETRAIN),
    Option("intermediate_output_graphs_dir", "/tmp/intermediate_graph/", "Where intermediate graphs go when "
           "--intermediate_store_frequency is set.", _OUTPUTS, _RETRAIN),
    Option("intermediate_store_frequency", 0, "Also save the graph every this many steps; 0 (the default) saves only "
           "the final one.", _OUTPUTS, _RETRAIN),
    Option("saved_model_dir", "", "Also export a TF2 SavedModel here (signature serving_default: input -> "
           "final_result).", _OUTPUTS, _RETRAIN),
    Option("plot_history", "", "Save training and validation accuracy and loss against step to this .png, .pdf or "
           ".svg file, the early-stopping point marked; use it to see over- or underfitting.", _OUTPUTS, _RETRAIN),
    Option("html", "", "Also write an HTML report in this folder (index.html plus thumbnails; opens from disk), the "
           "misclassified images with Grad-CAM: retrain reports the test set (scores, confusion matrix, training "
           "curves), evaluate the --image_dir (click a confusion-matrix cell for its images), relabel the images "
           "whose folder differs from the prediction.", _OUTPUTS, ("retrain", "relabel", "evaluate"), metavar="DIR"),
    Option("plot", None, "Also save the confusion matrix and per-class bars here (.png, .pdf or .svg).", _OUTPUTS,
           ("evaluate",), metavar="FILE.png"),
)

DEPLOY = (
    Option("output_tflite", "", "Also write a TFLite model here, with the frozen graph's contract (input 'input' "
           "normalised as the sidecar says, output 'final_result' in labels order).", _DEPLOY, _RETRAIN),
    Option("output_onnx", "", "Also write an ONNX model here (opset 17, converted from the frozen graph by "
           "tf2onnx; needs pip install 'retrain[onnx]'), with the same contract: input 'input', output "
           "'final_result' (and 'unknown_score' when the model has one).", _DEPLOY, _RETRAIN),
    Option("quantize", "none", "How to shrink the TFLite model: none, float16 (half the size), dynamic (int8 "
           "weights, a quarter) or int8 (an integer backbone calibrated on images: retrain's training images, "
           "export's --image_dir; the head and the unknown score stay float).", _DEPLOY, _EXPORTERS),
    Option("quantize_samples", 300, "Images decoded once to calibrate --quantize int8.", _DEPLOY, _EXPORTERS),
    Option("tflite_io", "float", "Input and output type of an int8 model: float, or uint8 for microcontrollers and "
           "Edge TPU (quantised with the tensors' own scale and zero point; integers throughout, so without the "
           "unknown score).", _DEPLOY, _EXPORTERS),
    Option("export_check_samples", 200, "Images each written model is run on and compared with the model it was "
           "made from (retrain's validation images, export's --image_dir): float ones must agree on every image.",
           _DEPLOY, _EXPORTERS),
)

LABELLING_TOOLS = (
    Option("image", None, "Image file(s) to label.", "", ("label_image",), required=("label_image",), nargs="+"),
    Option("top_k", 5, "How many labels to print per image.", "", ("label_image",)),
    Option("gradcam", None, "Write the image (one --image) with the Grad-CAM heatmap of its top label blended over "
           "it (.png or .jpg).", _GRADCAM, ("label_image",), metavar="OUT.png"),
    Option("gradcam_label", None, "Explain this label instead of the top one.", _GRADCAM, ("label_image",)),
    Option("gradcam_layer", None, "Convolutional layer Grad-CAM explains: a block name of the graph's backbone or a "
           "tensor name. (default: the backbone's last block; for a graph without sidecar, the last tensor with a "
           "spatial map before the output)", _GRADCAM, ("label_image", "relabel", "evaluate")),
    Option("output_dir", None, "Where the class folders go (one per label, plus _uncertain). Must be outside "
           "--image_dir's tree or a sub-folder of it, never --image_dir itself.", "", ("relabel",)),
    Option("mode", "copy", "copy, move or symlink each image; report only writes the CSV and changes nothing else.",
           "", ("relabel",)),
    Option("min_confidence", 0.5, "Images whose top probability is below this go to _uncertain.", "", ("relabel",)),
    Option("report", None, "CSV report to write. (default <output_dir>/relabel_report.csv)", "", ("relabel",)),
    Option("journal", None, "Journal of file operations, for resuming and --undo. (default "
           "<output_dir>/relabel_journal.jsonl)", "", ("relabel",)),
    Option("audit", False, "Print the suspected mislabels: images whose class folder the model disagrees with, most "
           "confident first.", "", ("relabel",)),
    Option("undo", None, "Reverse every operation in this journal (newest first) and exit; needs no graph.", "",
           ("relabel",), metavar="JOURNAL"),
    Option("batch_size", 32, "Images per batch through the graph.", "", ("relabel", "evaluate")),
    Option("unknown_dir", None, "A folder (any layout) of images of none of the labels: also print the AUROC of the "
           "model's unknown score between --image_dir's images and these, and the share of each flagged as none of "
           "the labels. Needs a model with an unknown score.", "", ("evaluate",), metavar="DIR"),
    Option("to", None, "The format to write.", "", ("export",), required=("export",)),
    Option("output", None, "The .tflite file, SavedModel folder or .onnx file to write. Its sidecar (.json) and "
           "labels file (.txt, unless --output_labels) go beside it.", "", ("export",), required=("export",)),
    Option("output_labels", "", "Where to write the labels file. (default: --output with the suffix .txt)", "",
           ("export",)),
)

VISUALIZE_FILTERS = (
    Option("layer", None, "Block name (wrong ones list the valid ones) or tensor name. (default: the last block)", "",
           _VISUALIZE),
    Option("filters", "0-15", "Filters to show: 0-15, 3,7,9 or 0-3,8.", "", _VISUALIZE),
    Option("output", "filters.png", "The grid image, .png or .jpg.", "", _VISUALIZE),
    Option("steps", 60, "Gradient ascent steps.", _OPTIMISATION, _VISUALIZE),
    Option("learning_rate", 0.05, "Step size.", _OPTIMISATION, _VISUALIZE),
    Option("jitter", 4, "Random shift in pixels at each step.", _OPTIMISATION, _VISUALIZE),
    Option("lp_norm", 6.0, "p of the Lp-norm penalty on pixel values.", _OPTIMISATION, _VISUALIZE),
    Option("lp_weight", 0.05, "Weight of the Lp-norm penalty; 0 turns it off.", _OPTIMISATION, _VISUALIZE),
    Option("tv_weight", 0.25, "Weight of the total-variation penalty; 0 turns it off.", _OPTIMISATION, _VISUALIZE),
    Option("octaves", 1, "Multi-scale steps: optimise a smaller image first, then enlarge it.", _OPTIMISATION,
           _VISUALIZE),
    Option("octave_scale", 1.4, "Size ratio between octaves.", _OPTIMISATION, _VISUALIZE),
    Option("seed", 0, "Seed of the starting noise and the jitter.", _OPTIMISATION, _VISUALIZE),
)
