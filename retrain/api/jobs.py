"""The jobs of the command-line tools, as Python calls: ``train`` (retrain), ``relabel`` and ``undo``."""
from __future__ import annotations

import os
from typing import Any

from ..errors import Log, UserError, option_name
from ..job_options import retrain_options
from ..label.journal import undo as undo_journal
from ..label.relabel import RelabelOptions, RelabelResult
from ..label.relabel import relabel as relabel_images
from ..options import checked_values, default
from ..options.values import refuse_unknown
from ..pipeline import run_retrain
from .model import Model, load
from .saving import check_path

# The relabel tool's options that ``relabel`` takes as keywords; its others (graph, audit, html...) have no
# meaning for a Model already loaded, or are other calls (undo).
RELABEL_KEYWORDS = ("min_confidence", "batch_size", "report", "journal")


def train(image_dir: str | os.PathLike, *, log: Log = print, **options: Any) -> Model:
    """Retrain a classifier on your photos, exactly as ``python -m scripts.retrain`` does.

    Every command-line flag is a keyword argument with the flag's name and default, e.g.
    ``how_many_training_steps=500``, ``architecture="mobilenet_1.0_224"``, ``learning_rate=0.01``,
    ``random_seed=0`` (the same seed and options give the same graph, byte for byte), ``fine_tune_blocks=2``,
    ``output_tflite="out/model.tflite"``. The README's flags table lists them all. As on the command line, the
    files go to ``output_graph`` (default ``/tmp/output_graph.pb``, its JSON sidecar beside it) and
    ``output_labels``, bottlenecks are cached in ``bottleneck_dir`` (reused by the next run) and TensorBoard
    summaries go to ``summaries_dir``; every written model is checked against the trained one first.

    Args:
        image_dir: a folder with one sub-folder of images per class, named after the class.
        log: where progress lines go (``print`` by default; ``lambda line: None`` for silence).
        **options: the retrain flags, without the dashes.

    Returns:
        The trained ``Model``, loaded from the written frozen graph, with ``test_report`` (scores on the
        held-out test images) and ``history`` (the validation measurements during training).

    Raises:
        UserError: an unknown keyword, a value of the wrong type or out of range, a folder without class
            folders, an output that cannot be written: the message names the keyword and says what to do.
    """
    settings = retrain_options({"image_dir": check_path(image_dir, "image_dir"), **options})
    result = run_retrain(settings, log)
    model = load(settings.output_graph, settings.output_labels, trust_graph=settings.trust_graph,
                 max_image_megapixels=settings.max_image_megapixels)
    model.test_report, model.history = result.test_report, result.history
    return model


def relabel(model: Model, image_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None,
            mode: str = default("mode"), *, log: Log = print, **options: Any) -> RelabelResult:
    """Sort a folder of images into one folder per predicted label, as ``python -m scripts.relabel`` does.

    Every image under ``image_dir`` (searched recursively) goes to ``output_dir/<label>/``, or to
    ``output_dir/_uncertain/`` when the model's best score is below ``min_confidence``. Nothing is overwritten
    (a taken name gets ``name (1).jpg``), and every file operation is journalled: run the same call again to
    finish an interrupted run, or pass the journal to ``retrain.undo`` to put everything back. A CSV report
    lists every image with its label, confidence, top 3 and, when the images already sit in class folders,
    whether the model disagrees with its folder (a suspected mislabel).

    Args:
        model: the ``Model`` to label with (from ``retrain.train`` or ``retrain.load``).
        image_dir: the folder of images to sort.
        output_dir: where the class folders go; outside ``image_dir`` or a sub-folder of it. Optional with
            ``mode="report"`` when ``report`` is given.
        mode: ``"copy"``, ``"move"`` or ``"symlink"`` each image, or ``"report"``: only write the CSV.
        log: where progress and warning lines go.
        **options: ``min_confidence`` (an image whose best score is below it goes to ``_uncertain``),
            ``batch_size`` (images per call through the model), ``report`` (the CSV's path; default
            ``output_dir/relabel_report.csv``) and ``journal`` (default ``output_dir/relabel_journal.jsonl``);
            their defaults are relabel's flags' (docs/flags.md).

    Returns:
        The ``RelabelResult``: ``verdicts`` (one per image, suspected mislabels first), ``suspected_mislabels``,
        ``report_path``, ``journal_path`` and ``count(status)``, e.g. ``count("copied")``.

    Raises:
        UserError: an unknown keyword, a bad value, or folders that overlap; the message names the keyword.
    """
    if not isinstance(model, Model):
        raise UserError(f"{option_name('model')} must be a retrain.Model (from retrain.train or retrain.load), "
                        f"got {type(model).__name__}")
    refuse_unknown(sorted(options), RELABEL_KEYWORDS, "relabel")
    values = checked_values("relabel", {"image_dir": image_dir, "output_dir": output_dir, "mode": mode, **options})
    settings = RelabelOptions(values["image_dir"], values["output_dir"], values["mode"], values["min_confidence"],
                              values["batch_size"], values["report"], values["journal"])
    return relabel_images(model.labeler, settings, log)


def undo(journal: str | os.PathLike, log: Log = print) -> int:
    """Put back everything a ``relabel`` run did, newest first, from its journal.

    Moved images return to their original paths (never over a file that has taken that name since), copies
    and links are removed, and a copy is kept when the original is gone or the copy was changed: undo never
    destroys the only version of an image. Safe to run again after an interruption.

    Args:
        journal: the run's journal, ``RelabelResult.journal_path`` (``output_dir/relabel_journal.jsonl``).
        log: where warnings and the summary line go.

    Returns:
        How many operations could not be reversed (0 when everything is back).

    Raises:
        UserError: the journal does not exist.
    """
    return undo_journal(check_path(journal, "journal"), log)

