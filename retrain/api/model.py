"""A retrained classifier in Python: ``load`` a model file, then ``predict``, ``evaluate`` and ``save``.

A thin door onto the library, like the command-line tools: ``Model`` wraps the
``GraphLabeler`` that ``label_image``, ``evaluate`` and ``relabel`` use, so an
image gets the same answer here as there.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Union

import numpy as np
from PIL import Image

from ..data.decode import LABEL_BATCH_SIZE, squash
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from ..errors import UserError, option_name
from ..label.evaluation import evaluate_folder
from ..label.labeler import GraphLabeler
from ..metrics import ClassificationReport
from ..models.model_file import FORMATS_HINT
from .saving import check_path, save_model

if TYPE_CHECKING:
    from ..training.head import EvalPoint

# What ``Model.predict`` takes for one image: a file's path, or uint8 RGB pixels ``[height, width, 3]``.
ImageInput = Union[str, os.PathLike, np.ndarray]


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image.

    Attributes:
        label: the most likely label, or None when the image could not be read.
        score: that label's probability, from 0 to 1 (0.0 when the image could not be read).
        probabilities: every label's probability, in the labels file's order (empty when unreadable).
        source: the image's path as you passed it, or, for an array, its position in the images you passed.
        error: why the image could not be read (a damaged or non-image file), else None.
        unknown_score: how far the image is from every label the model was trained on (higher: farther), or
            None when it was unreadable or the model has no unknown score (``Model.unknown_threshold`` is None).
        unknown: True when ``unknown_score`` is above the model's threshold: the image is none of the labels,
            whatever ``label`` and ``score`` say; None when the model cannot tell.
    """
    label: str | None
    score: float
    probabilities: dict[str, float] = field(default_factory=dict)
    source: str | os.PathLike | int = ""
    error: str | None = None
    unknown_score: float | None = None
    unknown: bool | None = None


class Model:
    """A retrained classifier and its labels, ready to label images.

    Get one from ``retrain.train`` or ``retrain.load``. It runs every format
    retrain writes (frozen graph, SavedModel, TFLite) and TensorFlow-for-Poets'
    graphs, fed as their sidecar (or your ``load`` overrides) says.

    Attributes:
        path: the model file (or SavedModel folder) it runs.
        format: ``"frozen graph"``, ``"SavedModel"`` or ``"TFLite"``, read from the file's content.
        test_report: after ``retrain.train``, the scores on the held-out test images (None without any, or when
            loaded from a file).
        history: after ``retrain.train``, the validation measurements taken during training, in step order.
    """

    def __init__(self, labeler: GraphLabeler, path: Path):
        self._labeler = labeler
        self.path = path
        self.format = labeler.model.format
        self.test_report: ClassificationReport | None = None
        self.history: list[EvalPoint] = []

    @property
    def labels(self) -> list[str]:
        """The labels, in the order of the model's outputs (and of every ``Prediction.probabilities``)."""
        return list(self._labeler.labels)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` every image is resized to before it is fed to the model."""
        return self._labeler.config.input_height, self._labeler.config.input_width

    @property
    def unknown_threshold(self) -> float | None:
        """The unknown score above which an image is none of the labels; None when the model has no unknown
        score (a TensorFlow-for-Poets graph, or one exported before retrain had one)."""
        return self._labeler.unknown_threshold

    @property
    def labeler(self) -> GraphLabeler:
        """The library's labeler this model runs, for the tools below the API (``retrain.label``)."""
        return self._labeler

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = LABEL_BATCH_SIZE
                ) -> list[Prediction]:
        """Label images: files, arrays, or a mix.

        Files are decoded as retrain decodes its training images (EXIF rotation, any colour mode, the pixel
        budget of ``load``); arrays are resized to ``input_size`` the same way, so a photo's array and its file
        get the same answer.

        Args:
            images: a path, a uint8 RGB array ``[height, width, 3]`` of any size, a ``[N, height, width, 3]``
                array, or a list of paths and arrays.
            batch_size: images per call through the model; larger is faster up to a point, and uses more memory.

        Returns:
            One ``Prediction`` per image, in the order given. An unreadable file does not stop the others: its
            prediction has ``label`` None and the reason in ``error``.

        Raises:
            UserError: a file does not exist, an array is not uint8 RGB, or ``batch_size`` is below 1.
        """
        items = _image_list(images)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"{option_name('batch_size')} must be a whole number of at least 1, got {batch_size!r}")
        files = {index: item for index, item in enumerate(items) if not isinstance(item, np.ndarray)}
        missing = [str(item) for item in files.values() if not Path(item).is_file()]
        if missing:
            raise UserError(f"{option_name('images')}: {missing[0]} does not exist"
                            + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
        height, width = self.input_size
        arrays = {index: _fit_array(item, index, height, width) for index, item in enumerate(items)
                  if isinstance(item, np.ndarray)}
        answers: dict[int, tuple[np.ndarray | None, float | None, str | None]] = {}
        decoded = self._labeler.label_files([Path(item) for item in files.values()], batch_size)
        for index, (_, probabilities, unknown_score, error) in zip(files, decoded):
            answers[index] = probabilities, unknown_score, error
        order = list(arrays)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            probabilities, unknown = self._labeler.predict_with_unknown(np.stack([arrays[i] for i in batch]))
            for row, index in enumerate(batch):
                answers[index] = probabilities[row], None if unknown is None else float(unknown[row]), None
        return [self._prediction(files.get(index, index), *answers[index]) for index in range(len(items))]

    def _prediction(self, source: str | os.PathLike | int, probabilities: np.ndarray | None,
                    unknown_score: float | None, error: str | None) -> Prediction:
        if probabilities is None:
            return Prediction(None, 0.0, {}, source, error)
        best = int(np.argmax(probabilities))
        return Prediction(self._labeler.labels[best], float(probabilities[best]),
                          {label: float(p) for label, p in zip(self._labeler.labels, probabilities)}, source,
                          unknown_score=unknown_score, unknown=self._labeler.is_unknown(unknown_score))

    def evaluate(self, image_dir: str | os.PathLike, batch_size: int = LABEL_BATCH_SIZE) -> ClassificationReport:
        """Score the model on a folder of labelled images, as ``python -m scripts.evaluate`` does.

        Args:
            image_dir: a folder with one sub-folder of images per class, named after the class (the layout
                ``retrain.train`` reads); every sub-folder must be one of ``labels``.
            batch_size: images per call through the model.

        Returns:
            The report: ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``, per-class
            ``precision``, ``recall``, ``f1`` and ``support``, the ``confusion`` matrix (rows: true labels), and
            ``to_text()`` for a printable table. Unreadable images are skipped with a warning.

        Raises:
            UserError: ``image_dir`` is not a folder of class folders, names a class the model does not know,
                or none of its images can be read.
        """
        evaluation = evaluate_folder(self._labeler, check_path(image_dir, "image_dir"), batch_size)
        if evaluation.unreadable:
            warnings.warn(f"skipped {len(evaluation.unreadable)} unreadable image(s), e.g. "
                          f"{evaluation.unreadable[0][1]}", stacklevel=2)
        return evaluation.report

    def save(self, path: str | os.PathLike, labels_path: str | os.PathLike | None = None) -> list[Path]:
        """Copy the model to ``path``, with its labels file and JSON sidecar beside it, as retrain writes them.

        The copy is in the model's own format (a frozen graph stays a frozen graph, a SavedModel folder a
        folder) whatever ``path``'s suffix; the sidecar records how to feed it, so ``retrain.load(path)`` and
        ``label_image --graph path`` need no other arguments. Every file is written atomically: an
        interrupted save leaves the old files or none, never half of one.

        Args:
            path: where the model goes, e.g. ``"out/retrained_graph.pb"``; the sidecar is ``path`` with the
                suffix ``.json``.
            labels_path: where the labels file goes, one label per line; default ``path`` with the suffix ``.txt``.

        Returns:
            The paths written: the model, the labels file and the sidecar.

        Raises:
            UserError: ``path`` is the file this model was loaded from, or a location that cannot be written.
        """
        return save_model(self.path, self.format, self._labeler.config, self.labels, path, labels_path)

    def __repr__(self) -> str:
        height, width = self.input_size
        shown = ", ".join(self.labels[:6]) + (f", ... ({len(self.labels)} in all)" if len(self.labels) > 6 else "")
        scored = f", test accuracy {self.test_report.accuracy:.1%}" if self.test_report else ""
        return f"<retrain.Model {self.format} {str(self.path)!r}: labels {shown}; input {height}x{width}{scored}>"


def load(path: str | os.PathLike, labels: str | os.PathLike | None = None, *, trust_graph: bool = False,
         max_image_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS, input_layer: str | None = None,
         output_layer: str | None = None, input_height: int | None = None, input_width: int | None = None,
         input_mean: float | None = None, input_std: float | None = None) -> Model:
    """Open a model file to label images with, as ``label_image --graph`` does.

    A model retrain wrote needs only its path: the JSON sidecar beside it says how to feed it and lists the
    labels. A TensorFlow-for-Poets graph has no sidecar: pass its labels file, and the input keywords when it
    was not trained at Poets' defaults (224x224, mean 128, std 128).

    Args:
        path: a frozen graph (``.pb``), a SavedModel folder or a ``.tflite`` file; the format is read from the
            content, not the name.
        labels: the labels file, one label per line in the model's output order; default: the sidecar's labels.
        trust_graph: run the model even if it holds operations that do more than compute (read or write files,
            run Python). Only for models from a source you trust.
        max_image_megapixels: an image whose header says it would decode to more pixels than this is reported
            unreadable instead of being decoded, so a decompression bomb cannot exhaust memory.
        input_layer: the input tensor's name (frozen graphs and SavedModels), instead of the sidecar's.
        output_layer: the output tensor's name, instead of the sidecar's.
        input_height: the height images are resized to, instead of the sidecar's.
        input_width: the width images are resized to, instead of the sidecar's.
        input_mean: subtracted from each pixel value (0 to 255) before the model, instead of the sidecar's.
        input_std: pixel values are divided by this after the mean, instead of the sidecar's.

    Returns:
        The ``Model``.

    Raises:
        UserError: the file does not exist or is no model, holds operations that need ``trust_graph``, or its
            labels are missing or do not match its outputs.
    """
    if not Path(check_path(path, "path")).exists():
        raise UserError(f"{option_name('path')} {path} does not exist; pass {FORMATS_HINT}")
    if labels is not None:
        check_path(labels, "labels")
    if trust_graph:
        warnings.warn(f"trust_graph: running {path} without checking its ops", stacklevel=2)
    labeler = GraphLabeler(path, labels, trust_graph=trust_graph, max_image_megapixels=max_image_megapixels,
                           input_layer=input_layer, output_layer=output_layer, input_height=input_height,
                           input_width=input_width, input_mean=input_mean, input_std=input_std)
    return Model(labeler, Path(path))


def _image_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """``images`` as a list of single images; a lone path or array is a list of one."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]  # a batch, or one image (checked later)
    try:
        items = list(images)
    except TypeError:
        raise UserError(f"{option_name('images')} must be paths or uint8 arrays, got {type(images).__name__}") \
            from None
    for index, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike, np.ndarray)):
            raise UserError(f"{option_name('images')}[{index}] must be a path or a uint8 array, got "
                            f"{type(item).__name__}")
    return items


def _fit_array(pixels: np.ndarray, index: int, height: int, width: int) -> np.ndarray:
    """An image array resized to the model's input as a decoded file is (``decode.squash``)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3 or 0 in pixels.shape:
        raise UserError(f"{option_name('images')}[{index}] is a {pixels.dtype} array of shape {pixels.shape}; "
                        f"pass uint8 RGB pixels of shape (height, width, 3)")
    return squash(Image.fromarray(pixels), height, width)
