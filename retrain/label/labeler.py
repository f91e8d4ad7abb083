"""Load an exported model and label images with it, in batches.

Works with every format we export (frozen graph, SavedModel, TFLite; see
``model_file``), preprocessing read from the JSON sidecar, and with
TensorFlow-for-Poets' ``retrained_graph.pb`` (no sidecar, input fixed at batch
size 1: pass ``--input_mean`` etc. as with Poets' ``label_image.py``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..data.decode import LABEL_BATCH_SIZE, decoded_batches
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS, validate_max_megapixels
from ..errors import UserError, option_name
from ..graph_contract import Sidecar
from ..models.model_file import load_model

REPORT_TOP_K = 3  # labels shown per image in a report: relabel's CSV and the HTML gallery



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

    @property
    def batched(self) -> bool:
        """False once the graph has refused a batch (batch size 1 baked in past its input): slower."""
        return self.model.batched

    def top_labels(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely ``(label, probability)`` pairs, best first."""
        return [(self.labels[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:k]]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, len(labels)]`` for uint8 RGB images at the graph's size."""
        return self.model.predict(images, (self.config.input_mean, self.config.input_std))

    def predict_files(self, paths: Sequence[Path], batch_size: int = LABEL_BATCH_SIZE
                      ) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
        """(path, probabilities, None) per image, or (path, None, error) if unreadable; input order."""
        for good, batch, bad in decoded_batches(paths, self.config.input_height, self.config.input_width, batch_size,
                                                max_megapixels=self.max_image_megapixels):
            results = {index: (probs, None) for index, probs in zip(good, self.predict(batch) if good else [])}
            results.update({index: (None, error) for index, error in bad})
            for index in sorted(results):
                yield paths[index], results[index][0], results[index][1]
