"""Reliability #1: every kind of image a real photo folder holds.

Usable files are decoded the same way everywhere (EXIF rotation applied,
converted to RGB); unusable ones are skipped with one warning line each and a
summary count, and the run goes on.
"""
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from retrain.data.decode import UnreadableImage, load_rgb
from retrain.pipeline import run_retrain
from tests.conftest import PROJECT, make_dataset, make_image, tiny_retrain_options

RED, BLUE = (220, 20, 20), (20, 20, 220)
HUGE_SIZE = (12000, 9000)
ODD_NAMES = ["with space.jpg", "ünïcødé 花.jpg", "$(touch pwned); rm -rf ~ `x` 'q\" & | > <.jpg",
             "-leading dash.JPG"]


def exif_rotated_jpeg(path):
    """A photo shown as 40x20, red left half and blue right half, stored sideways with EXIF orientation 6."""
    shown = np.zeros((20, 40, 3), np.uint8)
    shown[:, :20], shown[:, 20:] = RED, BLUE
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)
    return path


def animated_gif(path):
    frames = [Image.new("RGB", (24, 24), colour) for colour in (RED, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def half_transparent_png(path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[:, 8:] = (*BLUE, 255)  # left half fully transparent
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def sixteen_bit_png(path):
    """A 16-bit grayscale ramp from 0 to 65535 left to right."""
    ramp = np.tile(np.linspace(0, 65535, 64), (16, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    return path


def usable_odd_images(folder):
    """Files a photo folder holds that must be used: {file name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        exif_rotated_jpeg(folder / "rotated.jpg"),
        animated_gif(folder / "animated.gif"),
        half_transparent_png(folder / "alpha.png"),
        sixteen_bit_png(folder / "deep.png"),
    ]
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("L", (24, 24), 128).save(folder / "gray.jpg")
    paths += [folder / "cmyk.jpg", folder / "gray.jpg"]
    paths += [make_image(folder / name, RED, seed=i) for i, name in enumerate(ODD_NAMES)]
    return {path.name: path for path in paths}


def unusable_images(folder):
    """Files that look like images by name but can't be decoded."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = make_image(folder / "whole.jpg", RED, seed=5).read_bytes()
    (folder / "whole.jpg").unlink()
    png = make_image(folder / "whole.png", RED, seed=6).read_bytes()
    (folder / "whole.png").unlink()
    bmp = make_image(folder / "whole.bmp", RED, seed=7).read_bytes()
    (folder / "whole.bmp").unlink()
    contents = {"empty.jpg": b"", "empty copy.jpg": b"", "truncated.jpg": jpeg[:len(jpeg) // 2],
                "truncated.png": png[:len(png) // 2], "notes.jpg": b"shopping list: milk, eggs\n",
                # damaged BMP headers: PIL raises OverflowError and MemoryError, not OSError, for these
                "negative width.bmp": bmp[:18] + struct.pack("<i", -5) + bmp[22:],
                "exabyte.bmp": bmp[:18] + struct.pack("<ii", 1 << 30, 1 << 30) + bmp[26:]}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "moved away.jpg", folder / "dangling.jpg")
    return sorted(folder / name for name in [*contents, "dangling.jpg"])


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory):
    """12000x9000, solid so it is quick to make; half red, half blue to check the result."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    image = Image.new("RGB", HUGE_SIZE, RED)
    image.paste(BLUE, (HUGE_SIZE[0] // 2, 0, *HUGE_SIZE))
    image.save(path, quality=80)
    return path


def mean_colour(pixels):
    return pixels.reshape(-1, 3).mean(axis=0)


def test_exif_rotation_is_applied(tmp_path):
    pixels = load_rgb(exif_rotated_jpeg(tmp_path / "r.jpg"), 10, 20)
    np.testing.assert_allclose(mean_colour(pixels[:, :8]), RED, atol=25)
    np.testing.assert_allclose(mean_colour(pixels[:, 12:]), BLUE, atol=25)


@pytest.mark.parametrize("name, expected", [
    ("cmyk.jpg", (255, 0, 0)),  # CMYK (0, 255, 255, 0) is pure red
    ("gray.jpg", (128, 128, 128)),
    ("animated.gif", RED),  # the first frame
])
def test_other_modes_become_the_right_rgb(tmp_path, name, expected):
    pixels = load_rgb(usable_odd_images(tmp_path)[name], 8, 8)
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    np.testing.assert_allclose(mean_colour(pixels), expected, atol=12)


def test_transparent_areas_become_white(tmp_path):
    pixels = load_rgb(half_transparent_png(tmp_path / "a.png"), 8, 8)
    np.testing.assert_allclose(mean_colour(pixels[:, :3]), (255, 255, 255), atol=2)
    np.testing.assert_allclose(mean_colour(pixels[:, 5:]), BLUE, atol=2)


def test_sixteen_bit_keeps_its_whole_range(tmp_path):
    pixels = load_rgb(sixteen_bit_png(tmp_path / "d.png"), 4, 64)[..., 0].astype(int)
    assert pixels[:, 0].max() <= 2 and pixels[:, -1].min() >= 253  # black to white, not clipped to white
    assert abs(int(pixels[0, 32]) - 128) <= 3


def test_unusable_files_raise_unreadable_image(tmp_path):
    for path in unusable_images(tmp_path):
        with pytest.raises(UnreadableImage, match=re.escape(str(path))):
            load_rgb(path, 8, 8)


def test_huge_jpeg_is_decoded_in_little_memory(huge_jpeg):
    """A full decode of 12000x9000 needs 324 MB; capped at 150 MB more than the interpreter has, it must still work."""
    script = (
        "import resource, sys\n"
        "import numpy as np\n"
        "from retrain.data.decode import load_rgb\n"
        "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (used + 150 * 2**20, resource.RLIM_INFINITY))\n"
        "pixels = load_rgb(sys.argv[1], 224, 224)\n"
        "print(*pixels[:, :100].reshape(-1, 3).mean(0).round(), *pixels[:, 124:].reshape(-1, 3).mean(0).round())\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script, str(huge_jpeg)], cwd=PROJECT, capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    left, right = np.array(result.stdout.split(), float).reshape(2, 3)
    np.testing.assert_allclose(left, RED, atol=10)
    np.testing.assert_allclose(right, BLUE, atol=10)


def test_retrain_uses_every_usable_image_and_skips_the_rest_with_one_line_each(tmp_path, tiny_model_dir,
                                                                                 huge_jpeg):
    image_dir = make_dataset(tmp_path / "images", per_class=8)
    usable = usable_odd_images(image_dir / "red")
    os.symlink(huge_jpeg, image_dir / "red" / "huge.jpg")
    usable["huge.jpg"] = image_dir / "red" / "huge.jpg"
    unusable = unusable_images(image_dir / "blue" / "broken")
    options = tiny_retrain_options(image_dir, tiny_model_dir, tmp_path)
    messages = []
    result = run_retrain(options, log=messages.append)

    used = [path for split in result.data.values() for path in split.paths]
    assert set(usable.values()) <= set(used)
    assert sorted(path for path, _ in result.bottlenecks.unreadable) == unusable
    warnings = [m for m in messages if m.startswith("warning: skipping unreadable image")]
    assert len(warnings) == len(unusable)
    for path in unusable:
        assert sum(line.startswith(f"warning: skipping unreadable image {path}: ") for line in warnings) == 1
    assert all("\n" not in line for line in warnings)
    assert f"Skipped {len(unusable)} unreadable image(s) of {len(used) + len(unusable)}" \
        in messages
    assert (tmp_path / "out" / "g.pb").is_file()
