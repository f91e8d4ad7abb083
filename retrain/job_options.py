"""The options of one retrain job: every value it needs, built from the retrain tool's option keywords.

``retrain_options`` is what both doors call: the command line with its parsed flags, the Python API with
``retrain.train``'s keywords. Each field's default is its option's (``retrain.options``), and the checks here
refuse bad combinations before any image is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .cache.bottlenecks import check_batch_size
from .data.distortions import Distortions
from .data.pixel_budget import validate_max_megapixels
from .errors import UserError, option_name, option_value
from .explain.html_report import check_report_folder
from .export.deploy import check_export_options
from .export.onnx_file import require_onnx_export
from .export.tflite import NO_QUANTIZATION
from .files import check_plot_path, check_writable_file, check_writable_folder
from .models.architectures import ArchitectureSpec, get_architecture, tfhub_spec
from .options import build, checked_values, default
from .training.finetune import FineTuneConfig
from .training.head import TrainingConfig
from .training.recipes import apply_recipe, check_recipe


@dataclass
class RetrainOptions:
    """Everything one retrain run needs; each field's default is its option's (``retrain.options``)."""
    image_dir: str
    architecture: ArchitectureSpec
    output_graph: str = default("output_graph")
    output_labels: str = default("output_labels", "retrain")
    summaries_dir: str = default("summaries_dir")
    model_dir: str = default("model_dir")
    bottleneck_dir: str = default("bottleneck_dir")
    training: TrainingConfig = field(default_factory=TrainingConfig)
    testing_percentage: float = default("testing_percentage")
    validation_percentage: float = default("validation_percentage")
    test_batch_size: int = default("test_batch_size")
    print_misclassified_test_images: bool = default("print_misclassified_test_images")
    calibrate: bool = default("calibrate")
    unknown_quantile: float = default("unknown_quantile")
    final_tensor_name: str = default("final_tensor_name")
    intermediate_output_graphs_dir: str = default("intermediate_output_graphs_dir")
    intermediate_store_frequency: int = default("intermediate_store_frequency")
    distortions: Distortions = field(default_factory=Distortions)
    saved_model_dir: str = default("saved_model_dir")
    bottleneck_batch_size: int = default("bottleneck_batch_size")
    memory_budget_gb: float = default("memory_budget_gb")
    plot_history: str = default("plot_history")
    max_image_megapixels: float = default("max_image_megapixels")
    trust_graph: bool = default("trust_graph")
    html: str = default("html")  # folder for the HTML report on the test split (with training curves); "" for none
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    augment_copies: int = default("augment_copies")
    output_tflite: str = default("output_tflite")
    output_onnx: str = default("output_onnx")
    quantize: str = default("quantize")
    quantize_samples: int = default("quantize_samples")
    tflite_io: str = default("tflite_io")
    export_check_samples: int = default("export_check_samples")
    recipe: str = default("recipe")
    recipe_line: str = ""  # what the recipe set, printed as the run starts; "" without one

    def __post_init__(self) -> None:
        check_recipe(self.recipe, self.validation_percentage)
        validate_max_megapixels(self.max_image_megapixels)
        check_batch_size(self.bottleneck_batch_size)
        check_export_options(self.quantize, self.tflite_io, self.quantize_samples, self.export_check_samples)
        if self.quantize != NO_QUANTIZATION and not self.output_tflite:
            raise UserError(f"{option_value('quantize', repr(self.quantize))} applies to the TFLite file; add "
                            f"{option_value('output_tflite', 'PATH')}")
        if self.output_onnx:
            require_onnx_export(option_name("output_onnx"))
        if self.memory_budget_gb <= 0:
            raise UserError(f"{option_name('memory_budget_gb')} must be positive, got {self.memory_budget_gb}")
        if not 0 <= self.unknown_quantile <= 1:
            raise UserError(f"{option_name('unknown_quantile')} must be from 0 (off) to 1, got {self.unknown_quantile}")
        if self.test_batch_size < 1 and self.test_batch_size != -1:
            raise UserError(f"{option_name('test_batch_size')} must be at least 1, or -1 for the whole test set; "
                            f"got {self.test_batch_size}")


def backbone_spec(values: Mapping[str, Any]) -> ArchitectureSpec:
    """The registry row, or TF-Hub module, that the options architecture, tfhub_module and tfhub_image_size name."""
    return (tfhub_spec(values["tfhub_module"], values["tfhub_image_size"]) if values["tfhub_module"]
            else get_architecture(values["architecture"]))


def retrain_options(values: Mapping[str, Any]) -> RetrainOptions:
    """The options of one retrain run, from the retrain tool's option keywords (its flags without the dashes).

    Args:
        values: keyword -> value, e.g. ``{"image_dir": "photos", "how_many_training_steps": 500}``: only the
            options the user gave, since these win over a ``recipe``; every other option takes the recipe's
            value or its default (``python -m scripts.retrain --help`` lists them).

    Returns:
        The nested ``RetrainOptions``, its own checks passed.

    Raises:
        UserError: an unknown keyword (with the closest option's name), a value of the wrong type, or one the
            options' checks refuse.
    """
    checked = checked_values("retrain", values)
    architecture = backbone_spec(checked)
    recipe = apply_recipe(checked, values.keys(), architecture.name)
    return build(RetrainOptions, "retrain", recipe.values, architecture=architecture, recipe_line=recipe.line)


def check_outputs_writable(options: RetrainOptions) -> None:
    """Fail in seconds, not after the bottlenecks are computed, when an output cannot be written."""
    check_writable_file(options.output_graph, "output_graph")
    check_writable_file(options.output_labels, "output_labels")
    check_writable_folder(options.bottleneck_dir, "bottleneck_dir")
    check_writable_folder(options.summaries_dir, "summaries_dir")
    if options.intermediate_store_frequency > 0:
        check_writable_folder(options.intermediate_output_graphs_dir, "intermediate_output_graphs_dir")
    if options.saved_model_dir:
        check_writable_folder(Path(options.saved_model_dir).parent, "saved_model_dir")
    if options.plot_history:
        check_plot_path(options.plot_history, "plot_history")
        check_writable_file(options.plot_history, "plot_history")
    if options.html:
        check_report_folder(options.html)
    for option in ("output_tflite", "output_onnx"):
        if getattr(options, option):
            check_writable_file(getattr(options, option), option)
