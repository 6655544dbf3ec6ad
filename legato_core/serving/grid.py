"""The slider grid as one image: original row over forgetting row, target views left, retained right.

Cells sit on 16-px boundaries of the result, so identical cells encode to identical JPEG blocks (the browser
test compares rows that way)."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .resources import quantize

CELL = 128  # grid cells are multiples of 16 px so identical cells encode to identical JPEG blocks
GAP = 16
LABEL_W = 112
HEADER_H = 32


@functools.lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def compose_grid(before: torch.Tensor, after: torch.Tensor, entry, footer: str = "") -> Image.Image:
    """uint8 rows (N, 3, 64, 64) -> labelled grid image; ``footer``: text under the rows, in the labels' font
    (what the bottom row composes).

    The cells are laid out at half scale and the whole canvas is upscaled once (PIL bicubic, ~1 ms); every
    cell sits on a 16 px boundary of the result, so identical cells give identical JPEG blocks.
    """
    c, g, lw, hh = CELL // 2, GAP // 2, LABEL_W // 2, HEADER_H // 2
    n_target = 0 if entry.latent is None else len(entry.grid_views)
    n = len(before)
    cells = torch.cat([before, after])
    if cells.shape[-1] != c:
        cells = quantize(F.interpolate(cells.float() / 255, size=(c, c), mode="bicubic", align_corners=False))
    cells = cells.permute(0, 2, 3, 1).numpy()
    sep = 4  # between two cells of a group; groups are g apart (horizontal offsets do not matter for JPEG
    # identity of the rows: the bottom row is exactly c + g = 72 -> 144 px below the top one)
    xs = [lw + i * (c + sep) + (g if n_target and i >= n_target else 0) for i in range(n)]
    canvas = np.full((hh + 2 * c + 2 * g, xs[-1] + c + g, 3), 255, np.uint8)
    for row in range(2):
        y = hh + row * (c + g)
        for i, x in enumerate(xs):
            canvas[y:y + c, x:x + c] = cells[row * n + i]
    im = Image.fromarray(canvas)
    im = im.resize((im.width * 2, im.height * 2), Image.BICUBIC)
    draw = ImageDraw.Draw(im)
    font, small = _font(15), _font(13)
    name = entry.name if len(entry.name) <= 30 else entry.name[:29] + "…"
    if n_target:
        draw.text((2 * xs[0] + 4, 8), f"forgotten: {name}", fill=(150, 30, 30), font=font)
    draw.text((2 * xs[n_target] + 4, 8), "retained (other identities)", fill=(30, 100, 30), font=font)
    y1, y2 = 2 * hh + c, 2 * (hh + c + g) + c
    draw.text((8, y1 - 18), "original", fill=(0, 0, 0), font=font)
    draw.text((8, y1 + 2), "u = 0, t = 0", fill=(90, 90, 90), font=small)
    draw.text((8, y2 - 18), "forgetting", fill=(0, 0, 0), font=font)
    u = entry.u
    draw.text((8, y2 + 2), f"u = {u:.2f}", fill=(90, 90, 90), font=small)
    draw.text((8, y2 + 18), f"t = {entry.t_at(u):.2f}", fill=(90, 90, 90), font=small)
    if footer:
        im = _add_footer(im, footer, font)
    return im

def _add_footer(im: Image.Image, text: str, font) -> Image.Image:
    """``im`` with a white band below it holding ``text``, wrapped to the image's width."""
    draw = ImageDraw.Draw(im)
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > im.width - 16:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    out = Image.new("RGB", (im.width, im.height + 8 + 20 * len(lines)), (255, 255, 255))
    out.paste(im, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, text_line in enumerate(lines):
        draw.text((8, im.height + 2 + 20 * i), text_line, fill=(0, 0, 0), font=font)
    return out

# -- curve ------------------------------------------------------------------------------------------------
