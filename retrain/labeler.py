"""Load an exported graph and label images with it, in batches.

Works with our graphs (preprocessing read from the JSON sidecar) and with
TensorFlow-for-Poets' ``retrained_graph.pb`` (no sidecar, input fixed at batch
size 1: pass ``--input_mean`` etc. as with Poets' ``label_image.py``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .backbones import load_graph_def, normalize_pixels, prune_graph
from .decode import decoded_batches
from .errors import UserError
from .graph_contract import Sidecar
from .pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS, validate_max_megapixels

LABEL_BATCH_SIZE = 32  # images per call through a graph when labelling: batches amortise TensorFlow's per-call cost


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
    """A frozen classifier graph plus its labels, ready to label image files."""

    def __init__(self, graph_path: str | os.PathLike, labels_path: str | os.PathLike | None = None, *,
                 trust_graph: bool = False, max_image_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS,
                 **overrides):
        graph_path = Path(graph_path)
        if not graph_path.is_file():
            raise UserError(f"--graph {graph_path} does not exist; pass the .pb file written by retrain")
        self.config = resolve_graph_config(graph_path, **overrides)
        self.max_image_megapixels = validate_max_megapixels(max_image_megapixels)
        if labels_path is not None:
            self.labels = read_labels(labels_path)
        elif self.config.labels:
            self.labels = list(self.config.labels)
        else:
            raise UserError("no --labels given and no sidecar JSON beside the graph; pass the labels file")
        self._classify = self._compile(prune_graph(load_graph_def(graph_path, trust_graph), self.config.input_layer,
                                                   self.config.output_layer))
        self._batching = True
        outputs = self._run(np.zeros((1, self.config.input_height, self.config.input_width, 3), np.uint8))
        if outputs.shape[-1] != len(self.labels):
            raise UserError(f"the graph has {outputs.shape[-1]} outputs but the labels file has {len(self.labels)} "
                            f"labels; pass the labels file written together with this graph")

    def _compile(self, classify: Callable):
        """uint8 images -> probabilities, normalised inside the graph as retrain's backbones do."""
        import tensorflow as tf
        config = self.config
        signature = [tf.TensorSpec([None, config.input_height, config.input_width, 3], tf.uint8)]
        return tf.function(lambda images: classify(normalize_pixels(tf.cast(images, tf.float32), config.input_mean,
                                                                    config.input_std)),
                           input_signature=signature, autograph=False)

    def _run(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf
        if self._batching or len(images) == 1:
            try:
                return self._classify(tf.constant(images, tf.uint8)).numpy().reshape(len(images), -1)
            except (TypeError, ValueError):  # raised while tracing: the graph's input has another fixed size
                raise UserError(f"the graph does not take {self.config.input_height}x{self.config.input_width} "
                                f"images; check --input_height and --input_width") from None
            except tf.errors.InvalidArgumentError as error:
                if len(images) == 1:
                    raise UserError(f"the graph rejects {self.config.input_height}x{self.config.input_width} "
                                    f"input ({str(error).splitlines()[0][:160]}); check --input_height/width") from None
                self._batching = False  # a graph with batch size 1 baked in: fall back to one at a time
        return np.concatenate([self._run(images[i:i + 1]) for i in range(len(images))])

    @property
    def batched(self) -> bool:
        """False once the graph has refused a batch (batch size 1 baked in past its input): slower."""
        return self._batching

    def top_labels(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` most likely ``(label, probability)`` pairs, best first."""
        return [(self.labels[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:k]]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, len(labels)]`` for uint8 RGB images at the graph's size."""
        return self._run(images)

    def predict_files(self, paths: Sequence[Path], batch_size: int = LABEL_BATCH_SIZE
                      ) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
        """(path, probabilities, None) per image, or (path, None, error) if unreadable; input order."""
        for good, batch, bad in decoded_batches(paths, self.config.input_height, self.config.input_width, batch_size,
                                                max_megapixels=self.max_image_megapixels):
            results = {index: (probs, None) for index, probs in zip(good, self.predict(batch) if good else [])}
            results.update({index: (None, error) for index, error in bad})
            for index in sorted(results):
                yield paths[index], results[index][0], results[index][1]
