"""Image in: open, validate and normalise an uploaded face image (the first step of the data path).

Every failure is a ``ValueError`` with a message a person can act on; nothing here trusts the file.

Every PIL mode is read as the picture it stores (``_to_rgb``): transparent pixels are put on white, 16- and 32-bit
greyscale and floating-point images are scaled from their own range to 8 bits (not clipped at 255), LAB goes
through ImageCms. An animated image (GIF, APNG, WebP) is read as its first frame, and the caller is told so.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
MIN_SIDE = 16

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # one channel, more than 8 bits


class ImageError(ValueError):
    """An uploaded file that cannot be used as a face image."""


def _megapixels(n: int) -> str:
    mp = n / 1_000_000
    return f"{mp:.0f}" if mp >= 10 else f"{mp:.1f}"


def too_large_message(pixels: int | None) -> str:
    """One plain sentence (without its full stop) for an image over ``MAX_PIXELS``."""
    limit = f"{MAX_PIXELS // 1_000_000} megapixels"
    if pixels is None:
        return f"the image is larger than the limit of {limit}"
    return f"the image has {_megapixels(pixels)} megapixels and the limit is {limit}"


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float greyscale image -> "L", scaled from the range its values live in.

    I;16 (16-bit PNG / TIFF): 0..65535. I (32-bit int, e.g. TIFF, or 16-bit data in an int container): 0..255 if
    every value fits, else 0..65535 if every value fits, else its own min..max. F (float): 0..1, else 0..255,
    else 0..65535, else its own min..max; NaN and infinities count as 0.
    """
    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode.startswith("I;16"):
        full = 65535.0
    else:
        ranges = ((1.0,) if im.mode == "F" else ()) + (255.0, 65535.0)
        full = next((r for r in ranges if lo >= 0 and hi <= r), None)
        if full is None:  # outside every nominal range: stretch what is there
            arr, full = arr - lo, (hi - lo) or 1.0
    out = np.clip(np.round(arr * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    try:
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                            "LAB", "RGB")
        return ImageCms.applyTransform(im, transform)
    except (ImportError, OSError, ValueError):  # Pillow without littlecms: its own conversion
        return im.convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> the RGB picture it stores (see the module docstring)."""
    if im.mode in _WIDE_GREY:
        return _grey_to_8bit(im).convert("RGB")
    if im.mode == "LAB":
        return _lab_to_rgb(im)
    if im.mode in _ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")  # 1, L, P, RGB, CMYK, YCbCr, HSV


def _bomb_pixels(err: Exception) -> int | None:
    m = re.search(r"\((\d+) pixels\)", str(err))
    return int(m.group(1)) if m else None


def open_image(source: str | Path | Image.Image, notes: list[str] | None = None) -> Image.Image:
    """Open and validate; returns an upright RGB PIL image.

    ``notes``: if given, a list that gets one sentence for each thing the caller should tell the person (e.g. that
    only the first frame of an animated image is used).
    """
    if isinstance(source, Image.Image):
        im = source
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f"file not found: {path.name}")
        if path.stat().st_size == 0:
            raise ImageError(f"{path.name} is empty (0 bytes)")
        try:
            im = Image.open(path)
        except UnidentifiedImageError as e:
            raise ImageError(f"{path.name} is not an image PIL can read (PNG, JPEG, WebP, ...)") from e
        except Image.DecompressionBombError as e:  # header claims > 2x PIL's pixel limit: refused before decoding
            raise ImageError(too_large_message(_bomb_pixels(e))) from e
    if im.width * im.height > MAX_PIXELS:
        raise ImageError(too_large_message(im.width * im.height))
    if min(im.width, im.height) < MIN_SIDE:
        raise ImageError(f"image is too small ({im.width}x{im.height}); at least {MIN_SIDE}x{MIN_SIDE} is needed")
    frames = int(getattr(im, "n_frames", 1) or 1)
    try:
        if frames > 1:
            im.seek(0)
        im = ImageOps.exif_transpose(im)
        im.load()
        rgb = _to_rgb(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image data is corrupt or truncated ({type(e).__name__})") from e
    except Image.DecompressionBombError as e:
        raise ImageError(too_large_message(_bomb_pixels(e))) from e
    if frames > 1 and notes is not None:
        notes.append(f"it is an animated image with {frames} frames; only its first frame is used")
    return rgb


def to_tensor(im: Image.Image, size: int = 64) -> torch.Tensor:
    """Centre-crop to square and resize: (3, size, size) float in [0, 1]."""
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def load_image(source: str | Path | Image.Image, size: int = 64) -> torch.Tensor:
    return to_tensor(open_image(source), size)


def to_pil(img: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL."""
    arr = (img.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)
