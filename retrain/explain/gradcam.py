"""Grad-CAM: which part of a photo made a frozen graph choose a class.

Selvaraju et al.: weigh each channel of the last convolutional activations
``A`` by the spatial mean of ``d score_c / d A``, sum the channels and keep
the positive part. The score is the class's logit (the softmax's input), not
its probability, so a confident prediction does not flatten the map.
Gradients flow through the imported GraphDef itself, so this works for any
frozen graph, ours or TensorFlow-for-Poets', a whole batch at a time.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..data.decode import load_rgb
from ..data.pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS
from ..errors import UserError, first_line, option_name, option_value
from ..files import write_image
from ..graph_contract import Sidecar
from ..models.backbones import normalize_pixels
from .conv_layers import graph_blocks, resolve_layer
from .imported_graph import ImportedGraph

OVERLAY_OPACITY = 0.5  # heatmap over photo: enough colour to read, enough photo to recognise
EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
COLORMAP = "jet"  # the colour scale Grad-CAM figures use, so users can read them the same way


class GradCam:
    """Grad-CAM maps of a frozen classifier graph for batches of uint8 images."""

    def __init__(self, graph_path: str | os.PathLike, config: Sidecar, layer: str | None = None, *,
                 trust_graph: bool = False, max_image_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS):
        """``layer``: the convolutional tensor to explain (a name or name suffix); None finds the last one.

        Photos are decoded within ``max_image_megapixels``, as the labeller that scored them decoded them.
        """
        graph = ImportedGraph(graph_path, trust_graph)
        self.config = config
        self.max_image_megapixels = max_image_megapixels
        output = graph.tensor(config.output_layer, "output_layer")
        conv = graph.tensor(layer, "gradcam_layer") if layer else graph.last_feature_map(output)
        if conv.shape.rank != 4:
            raise UserError(f"{option_value('gradcam_layer', conv.name)} has shape {conv.shape}, not [batch, height, "
                            f"width, channels]; name a convolutional layer's output")
        self.layer = conv.name
        self._activations = graph.function(graph.tensor(config.input_layer, "input_layer"), conv)
        self._logits = graph.function(conv, graph.pre_softmax(output))

    @classmethod
    def for_graph(cls, graph_path: str | os.PathLike, config: Sidecar, layer: str | None = None,
                  **options) -> GradCam:
        """Explain ``layer`` (a block of the graph's backbone or a tensor name), by default its last conv block."""
        return cls(graph_path, config, resolve_layer(graph_blocks(graph_path), layer, "gradcam_layer"), **options)

    def maps(self, images: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """``[N, h, w]`` maps in [0, 1] at the layer's resolution; ``classes[i]`` is explained for image ``i``."""
        import tensorflow as tf
        try:
            return self._maps(images, classes)
        except tf.errors.InvalidArgumentError as error:
            if len(images) == 1:
                raise UserError(f"the graph rejects this input ({first_line(error)}); check "
                                f"{option_name('input_height')}/width and {option_name('gradcam_layer')}") from None
        # A graph with batch size 1 baked in past its input (Poets' Inception v3): one image at a time.
        return np.concatenate([self._maps(images[i:i + 1], classes[i:i + 1]) for i in range(len(images))])

    def _maps(self, images: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        import tensorflow as tf
        config = self.config
        normalized = normalize_pixels(tf.cast(tf.constant(images), tf.float32), config.input_mean, config.input_std)
        activations = self._activations(normalized)
        picks = tf.stack([tf.range(len(images)), tf.constant(list(classes), tf.int32)], axis=1)
        with tf.GradientTape() as tape:
            tape.watch(activations)
            # Images do not interact in a frozen (inference-mode) graph, so the summed score's gradient
            # holds each image's own gradient.
            score = tf.reduce_sum(tf.gather_nd(tf.reshape(self._logits(activations), [len(images), -1]), picks))
        gradients = tape.gradient(score, activations)
        channel_weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(channel_weights * activations, axis=-1)).numpy()
        peaks = cams.max(axis=(1, 2), keepdims=True)
        return np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)


def upsample(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """A map at the layer's resolution, smoothly resized to ``width`` x ``height`` (values stay in [0, 1])."""
    resized = Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def overlay(image: Image.Image, cam: np.ndarray, opacity: float = OVERLAY_OPACITY) -> Image.Image:
    """``image`` with the map coloured (blue: no evidence, red: most) and blended over it."""
    from matplotlib import colormaps
    rgb = image.convert("RGB")
    colours = colormaps[COLORMAP](upsample(cam, *rgb.size))[..., :3]
    blended = (1 - opacity) * np.asarray(rgb, np.float32) / 255 + opacity * colours
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def load_display(path: str | os.PathLike, max_side: int | None = None,
                 max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS) -> Image.Image:
    """The photo upright, in RGB, scaled down to at most ``max_side`` pixels (None: full size).

    Decoded by ``load_rgb`` like every image the model sees, so any file the model labelled can be shown.
    """
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION, 1) in ROTATED_ORIENTATIONS:
            width, height = height, width
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    over_budget = width * height / (max_megapixels * 1e6)
    if over_budget > 1:
        # A photo the model could label only through JPEG's reduced-scale decoding is shown at a size that
        # decoding reaches within the budget: load_rgb drafts at twice the size it is asked for.
        reduction = 2 ** math.ceil(math.log2(math.sqrt(over_budget)))
        scale = min(scale, 1 / (2 * reduction))
    return Image.fromarray(load_rgb(path, max(1, round(height * scale)), max(1, round(width * scale)),
                                    max_megapixels))


def write_explanation(gradcam: GradCam, image_path: Path, label_index: int, output: str | os.PathLike) -> None:
    """Save the photo at its own size with the map of ``label_index`` blended over it (.png or .jpg)."""
    write_image(explain_files(gradcam, [image_path], [label_index])[0], output, "gradcam")


def explain_files(gradcam: GradCam, paths: Sequence[Path], classes: Sequence[int],
                  max_side: int | None = None) -> list[Image.Image]:
    """Each photo (at most ``max_side`` pixels) with the map of ``classes[i]`` blended over it, one batch."""
    displays = [load_display(path, max_side, gradcam.max_image_megapixels) for path in paths]
    return explain_shown(gradcam, paths, classes, displays)


def explain_shown(gradcam: GradCam, paths: Sequence[Path], classes: Sequence[int],
                  displays: Sequence[Image.Image]) -> list[Image.Image]:
    """``displays[i]``, photo ``paths[i]`` as already shown, with the map of ``classes[i]`` blended over it."""
    config = gradcam.config
    inputs = np.stack([load_rgb(path, config.input_height, config.input_width, gradcam.max_image_megapixels)
                       for path in paths])
    return [overlay(display, cam) for display, cam in zip(displays, gradcam.maps(inputs, classes))]
