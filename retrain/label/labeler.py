"""Load an exported model and label images with it, in batches.

Works with every format we export (frozen graph, SavedModel, TFLite; see
``model_file``), preprocessing read from the JSON sidecar, and with
TensorFlow-for-Poets' ``retrained_graph.pb`` (no sidecar, input fixed at batch
size 1: pass ``--input_mean`` etc. as with Poets' ``label_image.py``).

"None of these": a model with the second output ``unknown_score`` and a
sidecar with its ``unknown_threshold`` gives each image its unknown score, and
an image scoring above the threshold is none of the labels. A model without
them (a Poets graph, an older export) labels as before, and ``unknown_note``
says in one line why there is no "none of these".
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from ..data.decode import LABEL_BATCH_SIZE, decoded_batches
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS, validate_max_megapixels
from ..errors import UserError, option_name
from ..graph_contract import UNKNOWN_SCORE_NAME, Sidecar, sidecar_path
from ..models.model_file import load_model

REPORT_TOP_K = 3  # labels shown per image in a report: relabel's CSV and the HTML gallery


class FileAnswer(NamedTuple):
    """What the model says about one image file (``GraphLabeler.label_files``)."""
    path: Path
    probabilities: np.ndarray | None  # [labels]; None: unreadable
    unknown_score: float | None  # None: unreadable, or the model has no unknown score
    error: str | None  # why the file could not be read, else None


def read_labels(path: str | os.PathLike) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"cannot read labels file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"labels file {path} is not text; pass the labels file written by retrain") from None
    labels = [line.strip() for line in lines if line.strip()]
    if not labels:
        raise UserError(f"labels file {path} is empty; pass the labels file written by retrain")
    return labels


def resolve_graph_config(graph_path: str | os.PathLike, **overrides) -> Sidecar:
    """How to feed the graph: Poets' defaults, then its sidecar if it has one, then explicit (non-None) flags."""
    sidecar = Sidecar.read(graph_path) or Sidecar()
    return dataclasses.replace(sidecar, **{key: value for key, value in overrides.items() if value is not None})


class GraphLabeler:
    """A classifier model file (frozen graph, SavedModel or TFLite) plus its labels, ready to label image files."""

    def __init__(self, graph_path: str | os.PathLike, labels_path: str | os.PathLike | None = None, *,
                 trust_graph: bool = False, max_image_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS,
                 **overrides):
        self.config = resolve_graph_config(graph_path, **overrides)
        self.max_image_megapixels = validate_max_megapixels(max_image_megapixels)
        # Loaded first: a missing file or one of no known format is the error to report, not missing labels.
        self.model = load_model(graph_path, self.config.input_layer, self.config.output_layer,
                                trust_graph=trust_graph)
        if labels_path is not None:
            self.labels = read_labels(labels_path)
        elif self.config.labels:
            self.labels = list(self.config.labels)
        else:
            raise UserError(f"no {option_name('labels')} given and no sidecar JSON beside the graph; pass the labels "
                            f"file")
        self.model.check_input_size(self.config.input_height, self.config.input_width)
        self.model.check_labels(self.labels, self.config.input_height, self.config.input_width,
                                (self.config.input_mean, self.config.input_std))
        self.unknown_note = _unknown_note(graph_path, self.model.has_unknown_score, self.config.unknown_threshold)
        # above this an image is none of the labels; None: this model cannot tell (unknown_note says why)
        self.unknown_threshold = None if self.unknown_note else float(self.config.unknown_threshold)

    @property
    def batched(self) -> bool:
        """False once the graph has refused a batch (batch size 1 baked in past its input): slower."""
        return self.model.batched

    def top_labels(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely ``(label, probability)`` pairs, best first."""
        return [(self.labels[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:k]]

    def is_unknown(self, unknown_score: float | None) -> bool | None:
        """Whether an image with this unknown score is none of the labels; None when the model cannot tell."""
        if unknown_score is None or self.unknown_threshold is None:
            return None
        return bool(unknown_score > self.unknown_threshold)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, len(labels)]`` for uint8 RGB images at the graph's size."""
        return self.predict_with_unknown(images)[0]

    def predict_with_unknown(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``[N, len(labels)]`` and unknown scores ``[N]`` (None when the model cannot tell)."""
        normalization = (self.config.input_mean, self.config.input_std)
        probabilities, unknown = self.model.predict_with_unknown(images, normalization)
        return probabilities, None if self.unknown_threshold is None else unknown

    def label_files(self, paths: Sequence[Path], batch_size: int = LABEL_BATCH_SIZE) -> Iterator[FileAnswer]:
        """One ``FileAnswer`` per image, in input order; an unreadable one has the reason in ``error``."""
        for good, batch, bad in decoded_batches(paths, self.config.input_height, self.config.input_width, batch_size,
                                                max_megapixels=self.max_image_megapixels):
            results = {index: FileAnswer(paths[index], None, None, error) for index, error in bad}
            if good:
                probabilities, unknown = self.predict_with_unknown(batch)
                for row, index in enumerate(good):
                    score = None if unknown is None else float(unknown[row])
                    results[index] = FileAnswer(paths[index], probabilities[row], score, None)
            for index in sorted(results):
                yield results[index]

    def predict_files(self, paths: Sequence[Path], batch_size: int = LABEL_BATCH_SIZE
                      ) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
        """(path, probabilities, None) per image, or (path, None, error) if unreadable; input order."""
        for answer in self.label_files(paths, batch_size):
            yield answer.path, answer.probabilities, answer.error


def _unknown_note(graph_path: str | os.PathLike, has_output: bool, threshold: float | None) -> str | None:
    """Why this model cannot say "none of these", in one line; None when it can."""
    if not has_output:
        return (f'{graph_path} has no {UNKNOWN_SCORE_NAME} output (exported before retrain had one, or a Poets '
                f'graph): no "none of these"')
    if threshold is None:
        return (f'{graph_path} has an {UNKNOWN_SCORE_NAME} output but {sidecar_path(graph_path)} gives no '
                f'unknown_threshold: no "none of these"')
    return None
