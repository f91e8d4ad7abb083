"""The options that say what goes in: images, backbone, bottleneck cache, the graph to run, hostile inputs."""
from __future__ import annotations

from ..files import DEFAULT_BOTTLENECK_DIR, DEFAULT_MODEL_DIR
from ..graph_contract import Sidecar
from .option import BACKBONE_TOOLS, GRAPH_TOOLS, IMAGE_TOOLS, LABELLING, TOOLS, Option

IMAGES = (
    Option("image_dir", "", "Folder of images, searched recursively: jpg, jpeg, png, bmp, gif, tif, tiff and webp in "
           "any letter case. retrain and evaluate read one sub-folder per class, named after the class; relabel "
           "sorts any layout; export checks the written file against the source graph on them and calibrates "
           "--quantize int8 with them; extract_bottlenecks also reads gs://, s3://... where Beam's extras for them "
           "are installed.", "images", ("retrain", "relabel", "evaluate", "export", "extract_bottlenecks"),
           required=("evaluate",)),
    Option("testing_percentage", 10.0, "Percentage of images held out as the test set, scored once at the end.",
           "images", ("retrain",)),
    Option("validation_percentage", 10.0, "Percentage of images used to check accuracy during training. The split "
           "comes from a hash of each file name, so adding images never moves old ones.", "images", ("retrain",)),
)

BACKBONE = (
    Option("architecture", "mobilenet_1.0_224", "Pretrained network to build on: the small mobilenet_* are fast; "
           "bigger ones can be more accurate but are slower. --list_architectures shows them all with their sizes. "
           "(default %(default)s, bundled, works offline)", "backbone", BACKBONE_TOOLS, field=""),
    Option("architecture", None, "A backbone of the registry to show the filters of (frozen-graph ones: MobileNet, "
           "Inception v4); or pass --graph.", "backbone", ("visualize_filters",)),
    Option("tfhub_module", "", "Use a TF-Hub image feature-vector module instead of --architecture: a URL or the "
           "folder of a downloaded SavedModel. Images are fed as floats in [0, 1].", "backbone", BACKBONE_TOOLS,
           field=""),
    Option("tfhub_image_size", 224, "Input height and width of the --tfhub_module.", "backbone", BACKBONE_TOOLS,
           field=""),
    Option("model_dir", str(DEFAULT_MODEL_DIR), "Where backbone files are downloaded to and looked for. A file "
           "already there is used without touching the network. (default: the project's models/)", "backbone",
           (*BACKBONE_TOOLS, "visualize_filters")),
    Option("list_architectures", False, "List every --architecture and exit.", "backbone", ("retrain",), field=""),
)

CACHE = (
    Option("bottleneck_dir", str(DEFAULT_BOTTLENECK_DIR), "Where bottleneck vectors are cached, per architecture "
           "and image content: an edited image is recomputed, a renamed one is not. (default: the project's "
           "bottlenecks/)", "bottleneck cache", BACKBONE_TOOLS),
    Option("bottleneck_batch_size", 16, "Images per backbone call while computing bottlenecks. (default "
           "%(default)s; 32 was slower for MobileNet on a 2-core CPU, see benchmarks/README.md)", "bottleneck cache",
           BACKBONE_TOOLS),
    Option("memory_budget_gb", 4.0, "Memory for holding bottlenecks during training. Beyond it they are streamed "
           "from --bottleneck_dir in large chunks instead.", "bottleneck cache", ("retrain",)),
)

_POETS = Sidecar()  # what a graph without a sidecar is assumed to take: Poets' label_image defaults
_GRAPH_INPUT = "graph input (read from the sidecar when present; Poets' defaults otherwise)"

GRAPH = (
    Option("graph", None, "Model to use: a frozen graph (.pb, e.g. the --output_graph of retrain), a SavedModel "
           "folder or a .tflite file, told apart by content.", "", GRAPH_TOOLS,
           required=("label_image", "evaluate", "export")),
    Option("labels", None, "Labels file, one per line. Optional when the graph has its JSON sidecar.", "", LABELLING),
    Option("input_layer", None, f"Input tensor name. (Poets default: {_POETS.input_layer})", _GRAPH_INPUT,
           GRAPH_TOOLS),
    Option("output_layer", None, f"Output tensor name. (Poets default: {_POETS.output_layer})", _GRAPH_INPUT,
           GRAPH_TOOLS),
    Option("input_height", None, f"Input height. (Poets default: {_POETS.input_height})", _GRAPH_INPUT, GRAPH_TOOLS,
           type=int),
    Option("input_width", None, f"Input width. (Poets default: {_POETS.input_width})", _GRAPH_INPUT, GRAPH_TOOLS,
           type=int),
    Option("input_mean", None, f"Subtracted from each pixel value. (Poets default: {_POETS.input_mean:g})",
           _GRAPH_INPUT, GRAPH_TOOLS, type=float),
    Option("input_std", None, f"Pixel values are divided by this after the mean. (Poets default: "
           f"{_POETS.input_std:g})", _GRAPH_INPUT, GRAPH_TOOLS, type=float),
)

HOSTILE_INPUTS = (
    Option("max_image_megapixels", 40.0, "Skip, with a warning, any image whose header says it would decode to more "
           "pixels than this, so a decompression bomb cannot exhaust memory. JPEGs count the pixels decoded at "
           "reduced scale: 100+ megapixel photos work.", "hostile inputs", IMAGE_TOOLS),
    Option("trust_graph", False, "Run a graph (or TF-Hub module) even if it holds ops that do more than compute, "
           "such as reading or writing files or running Python. Only for models from a source you trust.",
           "hostile inputs", TOOLS),
)
