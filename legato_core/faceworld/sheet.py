"""Contact sheets: a grid of images as one PNG, the way every figure in docs/ is assembled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def contact_sheet(images: torch.Tensor, rows: int, pad: int = 2, upscale: int = 2) -> Image.Image:
    """Tile (rows*cols, 3, H, W) images in [0, 1] row-major into one PIL image."""
    n, _, h, w = images.shape
    cols = (n + rows - 1) // rows
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    sheet = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        sheet[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = arr[k]
    img = Image.fromarray(sheet)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    return img


def save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
