"""The retrain job: the stages in order, from an image folder to exported files.

    split_images -> load_backbone -> get_bottlenecks -> train_head -> classification_report
                 -> export_frozen_graph / labels / sidecar
    (the backbone is released here: the rest loads only the written graph)
                 -> SavedModel / TFLite from the frozen graph
                 -> check every written model against the trained head -> "Wrote" -> HTML report
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache.bottlenecks import Bottlenecks, get_bottlenecks
from .cache.disk_space import planned_cache_bytes
from .cache.store import BottleneckCache, rounding_error
from .cache.views import augmentation_for, get_views, with_views
from .data.images import SPLITS, labels_of, split_images, split_summary
from .errors import Log, option_value
from .explain.gradcam import GradCam
from .explain.history_plot import plot_history
from .explain.html_report import ReportText, ScoredImage, scored_images, write_html_report
from .export.check import ENGINE_FEATURE_ERROR, CheckImages
from .export.deploy import check_exports, check_images, write_tflite_model
from .export.frozen_graph import export_frozen_graph, saved_model_from_graph, sidecar_for, write_labels
from .export.onnx_file import write_onnx_model
from .export.tflite import NO_QUANTIZATION, check_calibration, tflite_name
from .freed_memory import return_freed_memory
from .graph_contract import Sidecar, sidecar_path
from .job_options import RetrainOptions, check_outputs_writable, retrain_options
from .metrics import ClassificationReport
from .models.backbones import Backbone, load_backbone, trust_graph_warning
from .models.cut import cut_backbone, cut_tensor
from .models.model_file import FROZEN_GRAPH, ONNX, SAVED_MODEL, model_size
from .training.batches import bottleneck_batches
from .training.calibration import calibrate_head, calibration_line
from .training.class_balance import imbalance_warning
from .training.finetune import fine_tune, keeps_fine_tuning, pooled_features, restore_top, top_weights
from .training.head import EvalPoint, Head, train_head
from .training.recipes import NO_RECIPE
from .training.splits import SplitData, check_training_data, evaluate_test_set, split_data
from .training.summaries import TrainingSummaries, progress_printer
from .training.unknown import fit_unknown_threshold


@dataclass
class RetrainResult:
    labels: list[str]
    test_report: ClassificationReport | None
    bottlenecks: Bottlenecks
    data: dict[str, SplitData]  # by split name
    head: Head
    history: list[EvalPoint]


def run_retrain(options: RetrainOptions, log: Log = print) -> RetrainResult:
    """Run the whole job and write the outputs; returns what it measured."""
    trained = _train(options, log)
    # The backbone went out of scope with _train; its tf.functions sit in reference cycles, and once it has
    # run it holds a few hundred MB: freed before the written files are loaded again to be checked.
    gc.collect()
    return_freed_memory()
    _convert_check_and_report(options, trained, log)
    return trained.result


@dataclass
class _Trained:
    """What training leaves for the steps that no longer need the backbone."""
    result: RetrainResult
    contract: Sidecar
    written: str  # the frozen graph, labels and sidecar, for "Wrote ..." once every file is checked
    check: CheckImages  # the images every export is checked on, with the trained model's answers
    scored: list[ScoredImage] | None  # the test split, for the HTML report


def _train(options: RetrainOptions, log: Log) -> _Trained:
    """Every stage that needs the backbone: bottlenecks, training, test report, frozen graph."""
    augmentation = augmentation_for(options.augment_copies, options.distortions, options.training.seed)
    if options.fine_tune.blocks:
        cut_tensor(options.architecture, options.fine_tune.blocks)  # a wrong count fails before any work
    if options.recipe_line:
        log(options.recipe_line)
    records = split_images(options.image_dir, options.testing_percentage, options.validation_percentage)
    labels = labels_of(records)
    log(split_summary(records))
    check_outputs_writable(options)
    if options.trust_graph:
        log(trust_graph_warning())
    backbone = load_backbone(options.architecture, options.model_dir, options.trust_graph)
    blocks = options.fine_tune.blocks
    cut = cut_backbone(backbone, blocks, options.model_dir, options.trust_graph) if blocks else None
    extractor = cut.lower if cut else backbone  # what the cache holds: activations at the cut, or pooled vectors
    cache_rows = len(records) + sum(r.split == "train" for r in records) * augmentation.copies
    cache = BottleneckCache(options.bottleneck_dir, extractor.spec.cache_id, extractor.feature_size)
    cache_bytes = planned_cache_bytes(cache, cache_rows, augmentation.copies, blocks, log)  # and it fits the disk
    # Training rows and their views are streamed together or held together (see augment.with_views).
    budget = options.memory_budget_gb if cache_bytes <= options.memory_budget_gb * 2 ** 30 else 0.0
    bottlenecks = get_bottlenecks([r.path for r in records], extractor, backbone.input_size, cache,
                                  batch_size=options.bottleneck_batch_size, log=log, memory_budget_gb=budget,
                                  max_megapixels=options.max_image_megapixels)
    if bottlenecks.unreadable:
        log(f"Skipped {len(bottlenecks.unreadable)} unreadable image(s) of {len(records)}")
    data = split_data(records, bottlenecks, labels)
    check_training_data(data["train"], labels)
    warning = imbalance_warning(data["train"].labels, labels, options.training.class_weight)
    if warning:
        log(warning)
    if options.output_tflite and options.quantize == "int8":
        check_calibration(data["train"].paths)  # before training, not after: int8 calibrates on training images

    summaries = TrainingSummaries(options.summaries_dir)
    printer = progress_printer(options.training.steps, log)
    history: list[EvalPoint] = []

    def on_eval(point: EvalPoint) -> None:
        history.append(point)
        summaries.write_eval(point)
        printer(point)

    def on_checkpoint(step: int, head: Head) -> None:
        path = Path(options.intermediate_output_graphs_dir) / f"intermediate_{step}.pb"
        export_frozen_graph(backbone, head, path, options.final_tensor_name)
        log(f"Saved intermediate graph {path}")

    train, validation, test = (data[split] for split in SPLITS)
    train_rows, train_labels = train.features, train.labels
    if augmentation.copies:
        views = get_views(train.paths, extractor, backbone.input_size, cache, augmentation,
                          options.bottleneck_batch_size, options.max_image_megapixels, log, budget)
        train_rows, train_labels = with_views(train_rows, train_labels, views)
    features = {"train": train_rows, "validation": validation.features}
    if cut:  # stage one trains the head on the untouched top blocks' pooled output, as fast as without a cut
        features = {split: pooled_features(cut.top, activations, f"Pooling {split} activations")
                    for split, activations in features.items()}
    batches = bottleneck_batches(features["train"], train_labels, options.training.draws, options.memory_budget_gb,
                                 log)
    head = train_head(batches, backbone.feature_size, len(labels), options.training,
                      validation=(features["validation"], validation.labels) if len(validation.labels) else None,
                      on_eval=on_eval, on_checkpoint=on_checkpoint,
                      checkpoint_every=options.intermediate_store_frequency, train_labels=train_labels, log=log)
    if options.plot_history:
        _plot(history, options, log)
    # Calibration, the unknown score and --recipe's verdict work on the features the final head sees: a
    # fine-tuned top pools them anew, once.
    final_validation = features["validation"]
    if cut:
        stage_one, untouched = head, top_weights(cut.top)  # what --recipe may revert to
        head = fine_tune(cut.top, head, train_rows, train_labels, options.fine_tune, options.training.seed, log,
                         validation=(validation.features, validation.labels),
                         patience=options.training.early_stopping_patience, head_config=options.training)
        if len(validation.labels) and (options.recipe != NO_RECIPE or options.calibrate or options.unknown_quantile):
            final_validation = pooled_features(cut.top, validation.features, "Pooling validation activations")
        if options.recipe != NO_RECIPE and not keeps_fine_tuning(stage_one, head, features["validation"],
                                                                 final_validation, validation.labels, log):
            head, blocks, final_validation = stage_one, 0, features["validation"]  # the loaded backbone is exported
            restore_top(cut.top, untouched)  # the test report and the unknown score pool through it
        else:
            backbone = cut.top.tuned_backbone()
        test = SplitData(test.paths, test.labels, pooled_features(cut.top, test.features, "Pooling test activations"))
    if options.calibrate:
        head = calibrate_head(head, final_validation, validation.labels, log)
    if options.unknown_quantile:  # on the training images themselves, not their augmented views
        final_train = (pooled_features(cut.top, train.features, "Pooling training activations") if cut
                       else train.features)
        head = dataclasses.replace(head, unknown=fit_unknown_threshold(final_train, train.labels, final_validation,
                                                                       options.unknown_quantile, log))

    test_report = None
    if len(test.labels):
        rng = np.random.default_rng(options.training.seed)
        test_report, rows, probabilities = evaluate_test_set(head, test, labels, options.test_batch_size, rng)
        log(f"Final test accuracy = {test_report.accuracy * 100:.1f}% (N={test_report.count})")
        log(test_report.to_text())
        log(calibration_line(head, test.features[rows], test.labels[rows]))
        summaries.write_test(test_report, options.training.steps)
        if options.print_misclassified_test_images:
            log("=== MISCLASSIFIED TEST IMAGES ===")
            for row, predicted in zip(rows, probabilities.argmax(axis=1)):
                if predicted != test.labels[row]:
                    log(f"{test.paths[row]}  {labels[predicted]} (true: {labels[test.labels[row]]})")
    else:
        log(f"No test images ({option_value('testing_percentage', '0')}): skipping the test-set report")
    summaries.close()

    contract = sidecar_for(backbone, labels, options.final_tensor_name, blocks, head.temperature,
                           head.unknown.threshold if head.unknown else None)
    written = _write_graph(options, backbone, head, contract)
    scored = (scored_images([test.paths[row] for row in rows], test.labels[rows], probabilities)
              if options.html and test_report else None)
    return _Trained(RetrainResult(labels, test_report, bottlenecks, data, head, history), contract, written,
                    _check_images(options, data, head, contract, backbone if cut else None), scored)


def _early_stopping_marks(history: list[EvalPoint], options: RetrainOptions) -> tuple[int | None, int | None]:
    """With early stopping, the restored step (lowest validation loss) and the one it stopped at, for the curves."""
    if not options.training.early_stopping_patience:
        return None, None
    best = min(history, key=lambda point: point.validation_loss).step
    return best, history[-1].step if history[-1].step < options.training.steps else None


def _plot(history: list[EvalPoint], options: RetrainOptions, log: Log) -> None:
    plot_history(history, options.plot_history, *_early_stopping_marks(history, options))
    log(f"Wrote training history plot {options.plot_history}")


def _write_graph(options: RetrainOptions, backbone: Backbone, head: Head, contract: Sidecar) -> str:
    """The one file made from the backbone itself, the frozen graph, with labels and sidecar; says what it wrote."""
    export_frozen_graph(backbone, head, options.output_graph, options.final_tensor_name)
    write_labels(contract.labels, options.output_labels)
    return f"{options.output_graph}, {options.output_labels} and {contract.write(options.output_graph)}"


def _check_images(options: RetrainOptions, data: dict[str, SplitData], head: Head, contract: Sidecar,
                  tuned: Backbone | None) -> CheckImages:
    """The images every export will be checked on, with the trained model's answers (while the backbone is loaded).

    Validation images, the ones a user has not trained on; a run without any uses test, then train. The
    answers are the head on the cached bottlenecks, the very values it was trained on: no second backbone
    pass, and an export must reproduce the cache's preprocessing to agree (float16 rounding in the cache
    counts as a tie, see ``CheckImages``). A fine-tuned run caches activations below its top blocks, so
    there the ``tuned`` backbone answers from the pixels.
    """
    split = next((data[name] for name in ("validation", "test", "train") if len(data[name].paths)))
    def answers(features: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return head.predict_proba(features), None if head.unknown is None else head.unknown.scores(features)

    if tuned is None:
        def reference(positions: np.ndarray, _: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            return answers(split.features[positions])

        def logit_error(positions: np.ndarray) -> np.ndarray:
            return head.logit_error(rounding_error(split.features[positions]))

        def unknown_error(positions: np.ndarray) -> np.ndarray:
            return head.unknown.score_error(split.features[positions], rounding_error(split.features[positions]))
    else:
        tuned_features: dict[bytes, np.ndarray] = {}

        def reference(positions: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            # the tuned backbone runs once for both answers; its features stay for the scores' error bound
            features = tuned_features[positions.tobytes()] = tuned(pixels)
            return answers(features)

        def unknown_error(positions: np.ndarray) -> np.ndarray:
            # the Keras top and the frozen graph sum the same float32 products in another order
            features = tuned_features[positions.tobytes()]
            return head.unknown.score_error(features, np.abs(features) * ENGINE_FEATURE_ERROR)
        logit_error = None
    return check_images(split.paths, split.labels, options.export_check_samples, contract, reference,
                        "the trained model", options.max_image_megapixels, logit_error,
                        unknown_error if head.unknown is not None else None)


def _convert_check_and_report(options: RetrainOptions, trained: _Trained, log: Log) -> None:
    """SavedModel, TFLite and ONNX from the frozen graph, the check of every written file, "Wrote", the report."""
    contract = trained.contract
    written, artifacts = [trained.written], [(Path(options.output_graph), FROZEN_GRAPH, True)]
    if options.saved_model_dir:
        saved_model_from_graph(options.output_graph, contract, options.saved_model_dir, options.trust_graph)
        written.append(f"SavedModel {options.saved_model_dir} and {contract.write(options.saved_model_dir)}")
        artifacts.append((Path(options.saved_model_dir), SAVED_MODEL, True))
    if options.output_tflite:
        write_tflite_model(options.output_graph, options.output_tflite, contract, options.quantize,
                           options.tflite_io, trained.result.data["train"].paths, options.quantize_samples,
                           options.max_image_megapixels)
        written.append(f"{options.output_tflite} and {sidecar_path(options.output_tflite)}")
        is_float = options.quantize == NO_QUANTIZATION
        artifacts.append((Path(options.output_tflite), tflite_name(options.quantize), is_float))
    if options.output_onnx:
        write_onnx_model(options.output_graph, options.output_onnx, contract, options.trust_graph)
        written.append(f"{options.output_onnx} and {sidecar_path(options.output_onnx)}")
        artifacts.append((Path(options.output_onnx), ONNX, True))
    for check in check_exports(artifacts, trained.check, contract.labels, model_size(options.output_graph),
                               options.trust_graph):
        log(f"Checked {check.summary()}")
    for line in written:
        log(f"Wrote {line}")
    if options.html and trained.scored is None:
        log("No test images: no HTML report")
    elif options.html:
        _write_test_report(options, contract.labels, trained.scored, trained.result.history, log)


def _write_test_report(options: RetrainOptions, labels: list[str], scored: list[ScoredImage],
                       history: list[EvalPoint], log: Log) -> None:
    """The HTML report on the test split, with Grad-CAM through the graph just exported."""
    gradcam = GradCam.for_graph(options.output_graph, Sidecar.read(options.output_graph),
                                trust_graph=options.trust_graph, max_image_megapixels=options.max_image_megapixels)
    page = write_html_report(options.html, labels, scored, ReportText(f"Retrain: test set of {options.image_dir}"),
                             gradcam, history, _early_stopping_marks(history, options))
    log(f"Wrote HTML report {page}")


__all__ = ["RetrainOptions", "RetrainResult", "retrain_options", "run_retrain"]
