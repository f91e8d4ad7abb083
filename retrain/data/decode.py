"""Decode any image a user may have into the RGB array a backbone expects.

One function serves training, labelling and relabelling, so preprocessing can
never differ between the images a model was trained on and the ones it labels;
``decoded_batches`` runs it ahead of the backbone on worker threads for both.
"""
from __future__ import annotations

import collections
import contextvars
import os
import sys
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..options import default
from .pixel_budget import DEFAULT_MAX_IMAGE_MEGAPIXELS, open_within_budget

# Images per call through a graph when labelling or checking one: batches amortise TensorFlow's per-call cost.
LABEL_BATCH_SIZE = default("batch_size")


class UnreadableImage(Exception):
    """The file is not an image we can decode (empty, truncated, not an image)."""


# A region of an image, (left, top, right, bottom) in its pixels, as PIL's resize takes it.
Box = tuple[float, float, float, float]


def load_rgb(path: str | os.PathLike, height: int, width: int,
             max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS,
             crop: Callable[[int, int], Box] | None = None, zoom: float = 1.0) -> np.ndarray:
    """Read ``path`` as a ``[height, width, 3]`` uint8 RGB array.

    EXIF orientation is applied, any mode (CMYK, grayscale, palette, alpha,
    16-bit) is converted to RGB, animated images use their first frame, and
    the image is squashed to the network's size as TensorFlow-for-Poets did.
    JPEGs are decoded at a reduced scale first when they are much larger than
    needed, which makes huge photos cheap without visibly changing the result.
    An image that would decode to more than ``max_megapixels`` is refused from
    its header (``pixel_budget.py``).

    ``crop(image_width, image_height)``, given, picks the region that is resized instead of the whole image (a
    random-resized crop, ``distortions.py``); ``zoom`` is how much that region may be enlarged at most, so JPEGs
    are drafted ``zoom`` times larger and the crop keeps its detail.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draft = (int(np.ceil(width * 2 * zoom)), int(np.ceil(height * 2 * zoom)))
            with open_within_budget(path, draft, max_megapixels) as image:
                rgb = _to_rgb(ImageOps.exif_transpose(image))
                return squash(rgb, height, width, crop(*rgb.size) if crop else None)
    except Exception as error:  # on damaged files PIL also raises OverflowError, MemoryError, struct.error, ...
        raise UnreadableImage(f"{path}: {error or type(error).__name__}") from None


def squash(image: Image.Image, height: int, width: int, box: Box | None = None) -> np.ndarray:
    """Resize to the network's input, aspect ratio not kept, as TensorFlow-for-Poets fed its networks.

    Every decoded file and every array given to the Python API's ``Model.predict`` goes through here, so an
    array and the file it came from are fed alike.

    Args:
        image: an RGB image.
        height: the network's input height.
        width: the network's input width.
        box: the region of ``image`` to resize; None, the whole image.

    Returns:
        A ``[height, width, 3]`` uint8 array (the image itself when it already has that size).
    """
    return np.asarray(image.resize((width, height), Image.BILINEAR, box=box), dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale 16-bit range to 8 bits instead of clipping to white. "I;16" is always
        # 16-bit, even when dark; plain "I" may hold 8-bit values, so only a value above 255 proves 16 bits.
        array = np.asarray(image, dtype=np.float64)
        scale = 1.0 if image.mode == "I" and array.max() <= 255 else 255.0 / 65535.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Composite on white: transparent areas are usually background.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def decoded_batches(paths: Sequence, height: int, width: int, batch_size: int, workers: int = 2,
                    prefetch_batches: int = 3, max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS,
                    load: Callable | None = None,
                    ) -> Iterator[tuple[list[int], np.ndarray, list[tuple[int, str]]]]:
    """Decode images on worker threads, ahead of the consumer, in batches.

    Yields (indices of decoded images, uint8 batch, [(index, error)] for
    unreadable ones). PIL releases the GIL while decoding, so this overlaps
    with the backbone's compute; only ``prefetch_batches`` are held at once,
    and each worker decodes one image at a time within ``max_megapixels``.
    ``load(item, height, width, max_megapixels)`` decodes one of ``paths``
    (default ``load_rgb``; an augmented view passes its own, see ``augment.py``).
    """
    with ThreadPoolExecutor(max_workers=workers, initializer=_yield_cpu_to_the_backbone) as pool:
        pending: collections.deque[Future] = collections.deque()
        index_iter = iter(range(len(paths)))
        limit = batch_size * prefetch_batches

        def top_up() -> None:
            while len(pending) < limit:
                index = next(index_iter, None)
                if index is None:
                    return
                # In the caller's context, so a refusal names the option as the caller spells it (errors.py).
                pending.append(pool.submit(contextvars.copy_context().run, _decode_or_error, load or load_rgb,
                                           index, paths[index], height, width, max_megapixels))

        top_up()
        while pending:
            good, images, bad = [], [], []
            while pending and len(good) + len(bad) < batch_size:
                index, image, error = pending.popleft().result()
                top_up()
                if error is None:
                    good.append(index)
                    images.append(image)
                else:
                    bad.append((index, error))
            batch = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
            yield good, batch, bad


def decode_sample(paths: Sequence[Path], count: int, height: int, width: int, batch_size: int = LABEL_BATCH_SIZE,
                  max_megapixels: float = DEFAULT_MAX_IMAGE_MEGAPIXELS) -> tuple[list[Path], np.ndarray]:
    """Up to ``count`` of ``paths``, spread evenly over the list, decoded; unreadable ones are left out."""
    if len(paths) > count:
        paths = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, count).round().astype(int))]
    kept, batches = [], [np.zeros((0, height, width, 3), np.uint8)]
    for good, batch, _ in decoded_batches(list(paths), height, width, batch_size, max_megapixels=max_megapixels):
        kept.extend(paths[i] for i in good)
        batches.append(batch)
    return kept, np.concatenate(batches)


def _yield_cpu_to_the_backbone() -> None:
    """Lower the calling (decoding) thread's priority as far as it goes (nice 19).

    The backbone splits each layer across every core and waits for the slowest
    part, so a decoder that preempts one of its threads stalls the whole layer.
    At the lowest priority decoding mostly fills the cycles the backbone leaves
    idle; when it falls behind, the backbone waits and the cores are its. On 2
    cores this gave 5% more images per second than normal priority (nice 10
    gave nothing). It stays an ordinary thread, not SCHED_IDLE, so other busy
    programs slow decoding down but cannot stop it. Linux only: elsewhere the
    priority is per process.
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass  # refused by some sandboxes: decoding keeps its normal priority


def _decode_or_error(load: Callable, index: int, path, height: int, width: int,
                     max_megapixels: float) -> tuple[int, np.ndarray | None, str | None]:
    try:
        return index, load(path, height, width, max_megapixels), None
    except UnreadableImage as error:
        return index, None, str(error)
