"""Image in: every kind of bad upload gets a clear message; odd-but-valid images are normalised; every PIL mode is
read as the picture it stores (checked against conversions computed here, not by PIL's converters)."""

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
    if mode == "I;16":  # 300 / 65535 of full scale: almost black, not clipped to white
        assert t.max() < 0.01


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
    with pytest.raises(ImageError, match="45 megapixels and the limit is 40 megapixels"):
        load_image(path)


def test_tiny_images_are_refused(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        load_image(_save(tmp_path, _face(size=(8, 8)), "tiny.png"))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


# -- every PIL mode, against a reference conversion ----------------------------------------------------------------
def _ref_rgb() -> np.ndarray:
    """A face (a face-world render): natural colours, smooth and sharp regions."""
    from legato_core import faceworld
    from legato_core.images import to_pil

    return np.asarray(to_pil(faceworld.render([200_002], 0)[0]), dtype=np.uint8)


def _alpha(shape) -> np.ndarray:
    h, w = shape[:2]
    return np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))  # transparent left, opaque right


def _on_white(rgb: np.ndarray, a: np.ndarray) -> np.ndarray:
    f = a[..., None].astype(float) / 255
    return rgb.astype(float) * f + 255 * (1 - f)


def _mode_case(mode: str) -> tuple[Image.Image, np.ndarray, float]:
    """(image in ``mode``, the RGB picture it stores computed independently of PIL's converters, tolerance)."""
    import colorsys

    rgb = _ref_rgb()
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)
    g3 = np.repeat(grey[..., None], 3, -1).astype(float)
    a = _alpha(rgb.shape)
    if mode == "1":
        bits = grey > 127
        return Image.fromarray(bits), np.repeat(np.where(bits, 255.0, 0.0)[..., None], 3, -1), 0
    if mode == "L":
        return Image.fromarray(grey, "L"), g3, 0
    if mode == "LA":
        return Image.fromarray(np.stack([grey, a], -1), "LA"), _on_white(g3, a), 1
    if mode in ("P", "PA"):
        p = Image.fromarray(rgb).quantize(64)
        pal = np.array(p.getpalette()[:768] + [0] * (768 - len(p.getpalette()[:768])), dtype=float).reshape(-1, 3)
        colours = pal[np.asarray(p)]
        if mode == "P":
            return p, colours, 0
        pa = p.convert("PA")
        pa.putalpha(Image.fromarray(a, "L"))
        return pa, _on_white(colours, a), 1
    if mode == "RGB":
        return Image.fromarray(rgb, "RGB"), rgb.astype(float), 0
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, a]), "RGBA"), _on_white(rgb, a), 1
    if mode == "CMYK":
        k = rgb.min(-1)  # full black generation: c, m, y, k with (255 - c)(255 - k) / 255 = r
        cmy = np.where(k[..., None] < 255, 255 - (rgb.astype(float) * 255 / np.maximum(255 - k[..., None], 1)), 0)
        cmyk = np.dstack([np.clip(cmy.round(), 0, 255), k]).astype(np.uint8)
        c, kk = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
        return Image.fromarray(cmyk, "CMYK"), (255 - c) * (255 - kk) / 255, 1
    if mode == "YCbCr":
        ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"), dtype=float)
        y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
        ref = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
        return Image.fromarray(ycc.astype(np.uint8), "YCbCr"), np.clip(ref, 0, 255), 1
    if mode == "HSV":
        hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), dtype=np.uint8)
        ref = np.array([[colorsys.hsv_to_rgb(*(px / 255)) for px in row] for row in hsv.astype(float)]) * 255
        return Image.fromarray(hsv, "HSV"), ref, 1
    if mode == "LAB":  # the reference: littlecms (ImageCms) from sRGB to CIELAB and back is the original face
        from PIL import ImageCms

        to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
        return ImageCms.applyTransform(Image.fromarray(rgb), to_lab), rgb.astype(float), 4
    if mode in ("I;16", "I;16B"):  # 16-bit data: every 8-bit value v is stored as 257 v (0..65535)
        wide = grey.astype(np.uint16) * 257
        im = Image.fromarray(wide) if mode == "I;16" else Image.frombytes("I;16B", grey.shape[::-1],
                                                                           wide.astype(">u2").tobytes())
        return im, g3, 0
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257, "I"), g3, 0
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255, "F"), g3, 0
    raise AssertionError(mode)


ALL_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16B", "F"]
# the format each mode is stored in on disk (HSV has none: PIL writes it nowhere)
FILE_FORMAT = {"1": "png", "L": "png", "LA": "png", "P": "png", "PA": "tiff", "RGB": "png", "RGBA": "png",
               "CMYK": "tiff", "YCbCr": "jpg", "LAB": "tiff", "I": "tiff", "I;16": "png", "I;16B": "tiff", "F": "tiff"}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_is_read_as_the_picture_it_stores(mode):
    im, expected, tol = _mode_case(mode)
    assert im.mode == mode
    got = np.asarray(open_image(im), dtype=float)
    assert got.shape == expected.shape
    err = np.abs(got - expected)
    if mode == "LAB":  # 8-bit a*, b* cannot hold every sRGB colour exactly: a few saturated pixels move more
        assert err.mean() <= 1.5 and np.percentile(err, 99) <= tol, (err.mean(), err.max())
    else:
        assert err.max() <= tol + 0.5, f"{mode}: max error {err.max():.1f}"


@pytest.mark.parametrize("mode", [m for m in ALL_MODES if m in FILE_FORMAT])
def test_every_mode_read_from_a_file(tmp_path, mode):
    im, expected, tol = _mode_case(mode)
    fmt = FILE_FORMAT[mode]
    if fmt == "jpg":  # JPEG stores YCbCr itself; what it gives back is compared with the picture
        im = Image.fromarray(np.clip(expected.round(), 0, 255).astype(np.uint8))
        path = _save(tmp_path, im, "face.jpg", quality=100, subsampling=0)
        tol = 4
    else:
        path = _save(tmp_path, im, f"face.{fmt}")
    with Image.open(path) as stored:
        assert stored.mode == mode or (mode, stored.mode) == ("YCbCr", "RGB"), stored.mode
    got = np.asarray(open_image(path), dtype=float)
    err = np.abs(got - expected)
    if mode == "LAB":
        assert err.mean() <= 1.5 and np.percentile(err, 99) <= tol
    else:
        assert err.max() <= tol + 0.5, f"{mode} from .{fmt}: max error {err.max():.1f}"


def test_a_16_bit_greyscale_png_is_not_a_white_square(tmp_path):
    """The bug of issue 16: I;16 data was clipped at 255, so every 16-bit face became white."""
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    path = _save(tmp_path, Image.fromarray(ramp), "ramp16.png")
    got = np.asarray(open_image(path), dtype=int)[..., 0]
    assert got[:, 0].max() == 0 and got[:, -1].min() == 255
    assert np.abs(got - np.round(ramp / 257)).max() <= 1


@pytest.mark.parametrize(("values", "expected"), [
    (np.array([[0, 100, 255]] * 16, np.int32), [0, 100, 255]),  # 8-bit data in a 32-bit container
    (np.array([[0, 25700, 65535]] * 16, np.int32), [0, 100, 255]),  # 16-bit data
    (np.array([[-1000, 0, 1000]] * 16, np.int32), [0, 128, 255]),  # no nominal range: stretched
])
def test_32_bit_integer_images_are_scaled_from_their_range(values, expected):
    got = np.asarray(open_image(Image.fromarray(np.repeat(values, 6, 1), "I")), dtype=int)[0, ::6, 0]
    assert np.abs(got - expected).max() <= 1


def test_float_images_with_nan_and_8_bit_range():
    f = np.repeat(np.array([[0.0, 100.0, 255.0, np.nan]] * 16, np.float32), 5, 1)
    got = np.asarray(open_image(Image.fromarray(f, "F")), dtype=int)[0, ::5, 0]
    assert got.tolist() == [0, 100, 255, 0]


@pytest.mark.parametrize("fmt", ["gif", "png", "webp"])
def test_animated_images_use_the_first_frame_and_say_so(tmp_path, fmt):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [Image.new("RGB", (32, 32), c) for c in colours]
    path = tmp_path / f"anim.{fmt}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "webp" else {}))
    notes: list[str] = []
    got = np.asarray(open_image(path, notes), dtype=int)
    assert np.abs(got - np.array(colours[0])).max() <= 8, got[0, 0]
    assert notes == ["it is an animated image with 3 frames; only its first frame is used"]
    notes.clear()
    open_image(_save(tmp_path, frames[1], "still.png"), notes)
    assert notes == [], "a still image gets no note"


def test_over_the_pixel_limit_is_one_plain_sentence(tmp_path):
    path = _save(tmp_path, Image.new("L", (9000, 9000)), "huge.png")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == "the image has 81 megapixels and the limit is 40 megapixels"
    # a header beyond PIL's own decompression-bomb limit is refused before decoding, in the same words
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20_000, 20_000))
    with pytest.raises(ImageError) as info:
        load_image(bomb)
    assert str(info.value) == "the image has 400 megapixels and the limit is 40 megapixels"


def _png_header(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")
