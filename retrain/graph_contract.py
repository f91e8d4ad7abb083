"""What every exported model promises, written once.

TensorFlow-for-Poets' contract: a float ``input`` tensor ``[N, H, W, 3]``
holding ``(pixel - mean) / std``, and a softmax ``final_result`` whose columns
follow the labels file (one label per line). Our tools also read a JSON
sidecar beside the graph, so users need no preprocessing flags; a Poets graph
has none, and then Poets' own ``label_image.py`` defaults apply. One
``Sidecar`` type writes that JSON and reads it back, so the two can't drift.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError, option_name
from .files import atomic_write

INPUT_NAME = "input"
FINAL_TENSOR_NAME = "final_result"
# The optional second output: how far an image's features are from every class the head was trained on (the
# squared Mahalanobis distance to the nearest class mean); above the sidecar's unknown_threshold it is "none of these".
UNKNOWN_SCORE_NAME = "unknown_score"
SERVING_SIGNATURE = "serving_default"  # the SavedModel signature our exports write and our tools read


def sidecar_path(graph_path: str | os.PathLike) -> Path:
    """``retrained_graph.pb`` -> ``retrained_graph.json``."""
    return Path(graph_path).with_suffix(".json")


@dataclass
class Sidecar:
    """How to feed a graph and read its answer, and what it was trained on.

    The defaults are Poets' ``label_image.py`` defaults: what a graph without
    a sidecar (one made by TensorFlow-for-Poets) is assumed to take.
    """
    architecture: str = ""
    input_layer: str = INPUT_NAME
    output_layer: str = FINAL_TENSOR_NAME
    input_height: int = 224
    input_width: int = 224
    input_mean: float = 128.0
    input_std: float = 128.0
    feature_size: int = 0
    labels: list[str] = field(default_factory=list)
    fine_tuned_blocks: int = 0  # top blocks of the backbone retrained with the head (--fine_tune_blocks)
    # what the graph divides its logits by before the softmax (--calibrate); already applied, recorded for the
    # reader; a sidecar from before --calibrate has none: 1
    temperature: float = 1.0
    # the unknown score above which an image is none of the labels (--unknown_quantile of the validation images
    # pass); None: the model has no unknown_score output (a Poets graph, or one exported before it existed)
    unknown_threshold: float | None = None

    def write(self, graph_path: str | os.PathLike) -> Path:
        """Write this as JSON beside ``graph_path``, atomically; returns the sidecar's path."""
        path = sidecar_path(graph_path)
        with atomic_write(path, "w") as handle:
            json.dump(dataclasses.asdict(self), handle, indent=2)
            handle.write("\n")
        return path

    @classmethod
    def read(cls, graph_path: str | os.PathLike) -> Sidecar | None:
        """The sidecar beside ``graph_path``, or None if there is none (a Poets graph).

        Keys this version does not know are ignored, so a newer retrain's
        sidecar still works here.
        """
        path = sidecar_path(graph_path)
        if not path.is_file():
            return None
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{key: value for key, value in info.items() if key in known})
        except (OSError, ValueError, TypeError, AttributeError) as error:
            raise UserError(f"cannot read {path} ({error}); delete it and pass {option_name('input_mean')} etc. "
                            f"by hand") from None
