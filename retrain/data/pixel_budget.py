"""The pixel budget: refuse an image from its header when decoding it would take too much memory.

A 1 MB PNG can declare 40000x40000 pixels (4.8 GB once decoded), so the
number of pixels a decoder will allocate is checked right after the header is
read and before any pixel is decoded. JPEGs are drafted first (decoded at
1/2, 1/4 or 1/8 scale, up to 64x fewer pixels), so the budget applies to the
pixels actually decoded and 100+ megapixel photos stay cheap. Each decoding
thread holds at most one image, so memory stays bounded by threads x budget
however many bombs a folder holds.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from PIL import Image

from ..errors import UserError, option_name
from ..options import default

# Fits legitimate non-JPEG images (an 8K screenshot is 33 MP, an A4 page scanned at 600 dpi 35 MP) while
# one decode stays within about 1 GB even at the worst case measured (16-bit or alpha: ~25 bytes a pixel).
DEFAULT_MAX_IMAGE_MEGAPIXELS = default("max_image_megapixels")
OPTION = "max_image_megapixels"
# The formats we promise to read. Pillow recognises ~40 more by content, whatever the file's name, some
# through outside programs (Ghostscript for PostScript): a scraped "photo.jpg" must not reach those.
READABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
# Pillow's own guard compares one process-wide number with the header *before* a JPEG is drafted, so it cannot
# tell a 200 MP photo (fine at 1/8 scale) from a 200 MP PNG. It stays on as a backstop at the largest image a
# JPEG header can declare (Pillow raises above twice the number); ``check_pixel_budget`` is the real limit.
Image.MAX_IMAGE_PIXELS = 65535 * 65535 // 2


class OverPixelBudget(Exception):
    """Decoding the image would exceed ``--max_image_megapixels``; the message says how to raise it."""


@contextlib.contextmanager
def open_within_budget(path: str | os.PathLike, draft_size: tuple[int, int],
                       max_megapixels: float) -> Iterator[Image.Image]:
    """Open ``path`` lazily, draft JPEGs towards ``draft_size`` and check the budget; no pixel is decoded yet."""
    with Image.open(path, formats=READABLE_FORMATS) as image:
        image.draft("RGB", draft_size)
        check_pixel_budget(image, max_megapixels)
        yield image


def check_pixel_budget(image: Image.Image, max_megapixels: float) -> None:
    """Raise ``OverPixelBudget`` if opened-but-not-loaded ``image`` would decode to too many pixels.

    Call after ``image.draft(...)``: for JPEGs ``image.size`` is then the
    reduced size the decoder will allocate, for other formats the header's.
    """
    width, height = image.size
    if width * height > max_megapixels * 1e6:
        raise OverPixelBudget(f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels) is over the "
                              f"{max_megapixels:g} megapixel limit; raise {option_name(OPTION)} to read it")


def validate_max_megapixels(value: float) -> float:
    """The flag's value, checked: a positive number of megapixels."""
    if not value > 0:
        raise UserError(f"{option_name(OPTION)} must be a positive number of megapixels, got {value}")
    return value
