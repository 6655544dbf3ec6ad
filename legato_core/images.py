"""Image in: open, validate and normalise an uploaded face image (the first step of the data path).

Every failure is a ``ValueError`` with a message a person can act on; nothing here trusts the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
MIN_SIDE = 16


class ImageError(ValueError):
    """An uploaded file that cannot be used as a face image."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")  # L, I;16, CMYK, YCbCr, P ... -> RGB


def open_image(source: str | Path | Image.Image) -> Image.Image:
    """Open and validate; returns an upright RGB PIL image."""
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
            raise ImageError(f"image is too large ({e}); the limit is {MAX_PIXELS // 1_000_000} MP") from e
    if im.width * im.height > MAX_PIXELS:
        raise ImageError(f"image is too large ({im.width}x{im.height}); the limit is {MAX_PIXELS // 1_000_000} MP")
    if min(im.width, im.height) < MIN_SIDE:
        raise ImageError(f"image is too small ({im.width}x{im.height}); at least {MIN_SIDE}x{MIN_SIDE} is needed")
    try:
        im = ImageOps.exif_transpose(im)
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image data is corrupt or truncated ({type(e).__name__})") from e
    return _to_rgb(im)


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
