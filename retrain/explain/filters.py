"""Activation maximisation: the picture each convolution filter responds to most.

Start from faint noise and climb the gradient of one filter's mean
activation, through the frozen graph itself. Unregularised ascent makes
high-frequency noise that no photo contains, so, as in Mahendran & Vedaldi
and Olah et al., each step also pays for large pixel values (an Lp norm),
for pixel-to-pixel jumps (total variation, squared), and is taken on a randomly
shifted copy of the image (jitter); optional octaves optimise a small image
first and enlarge it, which brings out larger patterns. All filters are
optimised together, one image each, in one batch.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError, option_name, option_value
from ..files import write_image
from ..models.backbones import normalize_pixels
from ..options import default
from .imported_graph import ImportedGraph

RECTIFIERS = ("Relu", "Relu6")
PIXEL_HALF_RANGE = 127.5  # pixel values 0 .. 255 <-> [-1, 1], the space the ascent works in
START_NOISE = 10.0  # pixel-value std of the starting noise around mid-grey: faint, so the filter's pattern wins


@dataclass
class FilterOptions:
    """How the images are optimised.

    Pixels are scaled to [-1, 1]; each step moves them by ``learning_rate``
    times the filter's normalised gradient minus the penalties' gradients
    (weights relative to that unit step).
    """
    steps: int = default("steps")
    learning_rate: float = default("learning_rate", "visualize_filters")
    jitter: int = default("jitter")  # pixels of random shift per step
    lp_norm: float = default("lp_norm")
    lp_weight: float = default("lp_weight")
    tv_weight: float = default("tv_weight")
    octaves: int = default("octaves")  # >1: start at 1/octave_scale^(octaves-1) of the size and enlarge between octaves
    octave_scale: float = default("octave_scale")
    seed: int = default("seed")

    def __post_init__(self) -> None:
        for option, value in (("steps", self.steps), ("octaves", self.octaves)):
            if value < 1:
                raise UserError(f"{option_name(option)} must be at least 1, got {value}")
        if self.learning_rate <= 0 or self.octave_scale <= 1:
            raise UserError(f"{option_name('learning_rate')} must be positive and {option_name('octave_scale')} "
                            f"above 1")


class FilterVisualizer:
    """One layer of a frozen graph, ready to show what its filters respond to."""

    def __init__(self, graph: ImportedGraph, input_name: str, layer: str, height: int, width: int,
                 input_mean: float, input_std: float):
        activations = graph.tensor(layer)
        if activations.shape.rank != 4:
            raise UserError(f"{option_value('layer', activations.name)} has shape {activations.shape}, not [batch, "
                            f"height, width, filters]; name a convolutional layer's output")
        self.layer = activations.name
        self.filter_count = int(activations.shape[-1])
        images = graph.tensor(input_name, "input_layer")
        self._activations = graph.function(images, activations)
        # The ascent climbs the filter's response before its ReLU: a filter silent on the starting noise
        # would give no gradient after it, and ReLU6 would stop the climb at 6.
        before_relu = activations.op.inputs[0] if activations.op.type in RECTIFIERS else activations
        self._objective = graph.function(images, before_relu)
        self.size = (height, width)
        self._mean, self._std = input_mean, input_std
        # Pixels 0 and 255 as the graph's input sees them: the image must stay a possible photo.
        low, high = normalize_pixels(0.0, input_mean, input_std), normalize_pixels(255.0, input_mean, input_std)
        self._middle, self._half_range = (high + low) / 2, (high - low) / 2

    def check_filters(self, filters: Sequence[int]) -> None:
        bad = [f for f in filters if not 0 <= f < self.filter_count]
        if bad or not filters:
            raise UserError(f"{option_value('filters', str(bad[0]) if bad else '(none)')}: layer {self.layer} has "
                            f"filters 0-{self.filter_count - 1}")

    def start_images(self, count: int, seed: int = 0) -> np.ndarray:
        """Faint noise around mid-grey: the uint8 images the ascent starts from."""
        rng = np.random.default_rng(seed)
        noise = rng.normal(PIXEL_HALF_RANGE, START_NOISE, (count, *self.size, 3))
        return np.clip(np.round(noise), 0, 255).astype(np.uint8)

    def mean_activations(self, images: np.ndarray, filters: Sequence[int]) -> np.ndarray:
        """Each image's mean activation of its own filter (``filters[i]`` for image ``i``)."""
        import tensorflow as tf
        outputs = self._activations(tf.constant(normalize_pixels(images.astype(np.float32), self._mean, self._std)))
        return tf.reduce_mean(tf.gather(outputs, list(filters), axis=3, batch_dims=1), axis=[1, 2]).numpy()

    def visualize(self, filters: Sequence[int], options: FilterOptions = FilterOptions(),
                  start: np.ndarray | None = None) -> np.ndarray:
        """uint8 images ``[len(filters), H, W, 3]``, image ``i`` maximising filter ``filters[i]``."""
        import tensorflow as tf
        self.check_filters(filters)
        start = self.start_images(len(filters), options.seed) if start is None else start
        # The image lives in [-1, 1] (pixel 0 .. 255) whatever the graph's normalisation, so steps and
        # penalty weights mean the same for every backbone.
        image = tf.constant(start.astype(np.float32) / PIXEL_HALF_RANGE - 1)
        rng = np.random.default_rng(options.seed)
        picks = tf.constant(list(filters), tf.int32)
        for octave in range(options.octaves):
            size = [max(8, round(side / options.octave_scale ** (options.octaves - 1 - octave))) for side in self.size]
            image = tf.image.resize(image, size)
            for _ in range(math.ceil(options.steps / options.octaves)):
                shift = [int(s) for s in rng.integers(-options.jitter, options.jitter + 1, size=2)]
                with tf.GradientTape() as tape:
                    tape.watch(image)
                    shifted = tf.roll(tf.image.resize(image, self.size), shift=shift, axis=[1, 2])
                    full = shifted * self._half_range + self._middle
                    objective = tf.reduce_sum(tf.reduce_mean(
                        tf.gather(self._objective(full), picks, axis=3, batch_dims=1), axis=[1, 2]))
                ascent = tape.gradient(objective, image)
                # Normalised per image, so every filter climbs at the same pace whatever its scale, and the
                # penalties' weights compare with a step of size one.
                ascent /= tf.math.reduce_std(ascent, axis=[1, 2, 3], keepdims=True) + 1e-8
                with tf.GradientTape() as tape:
                    tape.watch(image)
                    penalty = (options.lp_weight * tf.reduce_sum(tf.abs(image) ** options.lp_norm)
                               + options.tv_weight * squared_variation(image))
                step = ascent - tape.gradient(penalty, image)
                image = tf.clip_by_value(image + options.learning_rate * step, -1.0, 1.0)
        pixels = (tf.image.resize(image, self.size).numpy() + 1) * PIXEL_HALF_RANGE
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def squared_variation(images):
    """Mahendran & Vedaldi's total variation with beta = 2: summed squared neighbour differences.

    Squared, its gradient shrinks with the differences, so steps smooth the
    image; the absolute value's constant-size gradient makes pixels flicker.
    """
    import tensorflow as tf
    return (tf.reduce_sum(tf.square(images[:, 1:] - images[:, :-1]))
            + tf.reduce_sum(tf.square(images[:, :, 1:] - images[:, :, :-1])))


def total_variation(images: np.ndarray) -> np.ndarray:
    """Mean absolute difference between neighbouring pixels, per image (in pixel values)."""
    values = images.astype(np.float64)
    return (np.abs(np.diff(values, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(values, axis=2)).mean(axis=(1, 2, 3)))


def parse_filters(text: str) -> list[int]:
    """``"0-15"``, ``"3,7,9"`` or ``"0-3,8"`` -> filter indices."""
    filters: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            filters.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise UserError(f"{option_value('filters', repr(text))}: use a range like 0-15 or a list like 3,7,9") from None
    return filters


def save_grid(images: np.ndarray, filters: Sequence[int], path: str | os.PathLike, title: str = "") -> None:
    """One captioned tile per filter in a near-square grid, saved as PNG or JPEG."""
    count, height, width = images.shape[:3]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    caption, margin = 14, 4
    top = caption if title else 0
    grid = Image.new("RGB", (columns * (width + margin) + margin, top + rows * (height + caption + margin) + margin),
                     "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((margin, 1), title, fill="black")
    for index, (tile, number) in enumerate(zip(images, filters)):
        x = margin + (index % columns) * (width + margin)
        y = top + margin + (index // columns) * (height + caption + margin)
        grid.paste(Image.fromarray(tile), (x, y + caption))
        draw.text((x, y + 1), f"filter {number}", fill="black")
    write_image(grid, path, "output")
