"""The pixel budget: bombs are refused from their header, big JPEGs still decode at reduced scale."""
import numpy as np
import pytest
from PIL import Image

from retrain.data.pixel_budget import OverPixelBudget, open_within_budget, validate_max_megapixels
from retrain.errors import UserError
from tests.hostile_files import gif_bomb, png_bomb, tiff_bomb

DRAFT = (448, 448)


@pytest.mark.parametrize("bomb, name", [(png_bomb, "bomb.png"), (tiff_bomb, "bomb.tif"), (gif_bomb, "bomb.gif")])
def test_bombs_are_refused_from_the_header_without_decoding(bomb, name, tmp_path):
    path = bomb(tmp_path / name, 20000, 15000)  # 300 megapixels, at least 300 MB decoded
    with pytest.raises(OverPixelBudget, match=r"20000x15000 pixels \(300 megapixels\) is over the 40 megapixel "
                                              r"limit; raise max_image_megapixels to read it"):
        with open_within_budget(path, DRAFT, 40):
            pytest.fail("the image was handed over for decoding")


@pytest.mark.parametrize("bomb", [png_bomb, tiff_bomb, gif_bomb])
def test_the_bombs_are_real_images(bomb, tmp_path):
    with Image.open(bomb(tmp_path / "bomb", 3000, 3100)) as image:  # the GIF's LZW table is cleared on the way
        pixels = np.asarray(image)
    assert pixels.shape[:2] == (3100, 3000) and not pixels.any()


def test_jpegs_count_the_pixels_decoded_after_draft(tmp_path):
    Image.new("RGB", (4000, 3000), (200, 40, 40)).save(tmp_path / "big.jpg")  # 12 MP, drafted to 1/4: 0.75 MP
    with open_within_budget(tmp_path / "big.jpg", DRAFT, 1) as image:
        image.load()
        assert image.size == (1000, 750)
    with pytest.raises(OverPixelBudget, match="4000x3000"):
        with open_within_budget(tmp_path / "big.jpg", (4000, 3000), 1):  # no reduction possible
            pass


def test_other_formats_count_their_header_size(tmp_path):
    Image.new("RGB", (1200, 1000)).save(tmp_path / "a.png")
    with pytest.raises(OverPixelBudget, match="1200x1000 pixels"):
        with open_within_budget(tmp_path / "a.png", DRAFT, 1):
            pass
    with open_within_budget(tmp_path / "a.png", DRAFT, 1.2) as image:
        image.load()


def test_formats_we_do_not_read_are_not_handed_to_pillow(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg", format="PPM")
    with pytest.raises(Image.UnidentifiedImageError):
        with open_within_budget(tmp_path / "photo.jpg", DRAFT, 40):
            pass


@pytest.mark.parametrize("value", [0, -1, float("nan")])
def test_the_limit_must_be_positive(value):
    with pytest.raises(UserError, match="^max_image_megapixels must be a positive number"):
        validate_max_megapixels(value)


def test_pillows_own_guard_stays_on_as_a_backstop():
    import retrain.data.decode  # noqa: F401  (importing the decoder must not switch the guard off)
    assert Image.MAX_IMAGE_PIXELS is not None
