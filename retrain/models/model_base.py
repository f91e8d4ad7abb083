"""What every loaded classifier model is, whatever its file format: normalised images in, probabilities out.

``model_file`` opens the TensorFlow formats and TFLite, ``onnx_model`` ONNX
files; each is a ``Model`` subclass that only says how to run one batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError, option_name

Normalization = Optional[tuple[float, float]]  # (mean, std) of uint8 pixels; None: already normalised
Outputs = tuple[np.ndarray, Optional[np.ndarray]]  # probabilities [N, C], unknown scores [N] or None
FORMATS_HINT = ("a frozen graph (.pb), a SavedModel folder, a .tflite or an .onnx file written by retrain or "
                "scripts.export")


def input_size_advice() -> str:
    """What to check when a model refuses the image size it was given."""
    return f"check {option_name('input_height')} and {option_name('input_width')}"


class BatchRefused(Exception):
    """The model cannot take this many images at once (batch size 1 baked in): run them one by one."""


class Model:
    """A loaded classifier: normalised images in, probabilities out, in batches when the model allows.

    ``input_size`` is ``(height, width)`` when the file fixes it, else None
    (our frozen graphs take any size; the sidecar says which one to feed).
    ``has_unknown_score``: the file has the second output ``unknown_score`` (``--unknown_quantile``).
    """
    format: str

    def __init__(self, path: Path, input_size: tuple[int, int] | None, has_unknown_score: bool = False):
        self.path = path
        self.input_size = input_size
        self.has_unknown_score = has_unknown_score
        self.batched = True

    def _call(self, images: np.ndarray, normalization: Normalization) -> Outputs:
        """Both outputs for one batch; raises ``BatchRefused`` when the batch is too big for the model."""
        raise NotImplementedError

    def predict_with_unknown(self, images: np.ndarray, normalization: Normalization = None) -> Outputs:
        """Probabilities ``[N, C]`` and unknown scores ``[N]`` (None without that output) in one pass.

        ``images`` are the normalised float32 values the model's input takes,
        or, with ``normalization=(mean, std)``, uint8 pixels to normalise first
        (inside the compiled function where there is one: about 10x cheaper).
        An image whose score is above the sidecar's ``unknown_threshold`` is none of the labels.
        """
        if self.batched or len(images) == 1:
            try:
                probabilities, scores = self._call(images, normalization)
                return (probabilities.reshape(len(images), -1),
                        None if scores is None else scores.reshape(len(images)))
            except BatchRefused:
                self.batched = False  # a graph with batch size 1 baked in: fall back to one at a time
        singles = [self.predict_with_unknown(images[i:i + 1], normalization) for i in range(len(images))]
        return (np.concatenate([p for p, _ in singles]),
                np.concatenate([s for _, s in singles]) if self.has_unknown_score else None)

    def predict(self, images: np.ndarray, normalization: Normalization = None) -> np.ndarray:
        """Probabilities ``[N, C]`` for images ``[N, H, W, 3]`` (see ``predict_with_unknown``)."""
        return self.predict_with_unknown(images, normalization)[0]

    def check_input_size(self, height: int, width: int) -> None:
        """Refuse a size the file does not take, before it produces a confusing runtime error."""
        if self.input_size is not None and self.input_size != (height, width):
            raise UserError(f"the {self.format} {self.path} does not take {height}x{width} images (it takes "
                            f"{self.input_size[0]}x{self.input_size[1]}); {input_size_advice()}")

    def check_labels(self, labels: list[str], height: int, width: int, normalization: Normalization) -> None:
        """The model's output size must match the labels (probed on one blank image, the way labelling runs it)."""
        outputs = self.predict(np.zeros((1, height, width, 3), np.uint8), normalization).shape[-1]
        if outputs != len(labels):
            raise UserError(f"the {self.format} {self.path} has {outputs} outputs but the labels file has "
                            f"{len(labels)} labels; pass the labels file written together with this model")
