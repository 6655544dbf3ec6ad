"""Image in: every kind of bad upload gets a clear message; odd-but-valid images are normalised."""

import io

import numpy as np
import pytest
from PIL import Image

from legato_core.images import ImageError, load_image, open_image


def _save(tmp_path, img, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def _face(mode="RGB", size=(80, 60)):
    arr = (np.random.default_rng(0).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    return Image.fromarray(arr).convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK", "P", "I;16"])
def test_other_colour_modes_become_rgb(tmp_path, mode):
    fmt = {"CMYK": "face.jpg"}.get(mode, "face.png")
    img = _face().convert(mode) if mode != "I;16" else Image.fromarray((np.ones((40, 40)) * 300).astype(np.uint16))
    t = load_image(_save(tmp_path, img, fmt))
    assert t.shape == (3, 64, 64) and 0 <= t.min() and t.max() <= 1


def test_transparent_pixels_are_composited_on_white(tmp_path):
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    t = load_image(_save(tmp_path, img, "clear.png"))
    assert t.mean() > 0.99


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 30), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 30, 30))  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    upright = open_image(path)
    assert upright.size == (30, 60)
    assert np.asarray(upright)[5, 15].mean() > 200  # white ends up on top


def test_not_an_image_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)


def test_truncated_file_is_refused(tmp_path):
    buf = io.BytesIO()
    _face(size=(200, 200)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def test_huge_dimensions_are_refused_before_decoding(tmp_path):
    path = _save(tmp_path, Image.new("L", (9000, 5000)), "huge.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_tiny_images_are_refused(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        load_image(_save(tmp_path, _face(size=(8, 8)), "tiny.png"))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
