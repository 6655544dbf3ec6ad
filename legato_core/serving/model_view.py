"""The "model" view of a session: what the deployed model draws with every forgotten person applied, and the table
of the requests behind it.

The image is a wall of tiles, one per person: the base model's render above the model's below. Forgotten people
come first, then a few others (retained face-world people and random people of the prior) whom the model must
leave as they were. Cells are 128 px on 16-px boundaries, so identical cells give identical JPEG blocks and a
reader (the browser test) can compare a person's two cells with ``model_cells``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .grid import _font
from .resources import quantize

CELL, GAP, LABEL_W, HEAD, SECTION = 128, 16, 112, 32, 32
PER_ROW = 10  # tiles per row of the wall


@dataclass(frozen=True)
class Cell:
    """Where one person's two cells lie in the image: left edge, top of the base cell, top of the model cell."""

    x: int
    y_base: int
    y_model: int


def model_cells(n_forgotten: int, n_others: int, per_row: int = PER_ROW) -> list[Cell]:
    """The cells of ``compose_model_grid``'s image, forgotten people first, in the order given."""
    cells, y = [], 0
    for n in (n_forgotten, n_others):
        if n == 0:
            continue
        y += SECTION
        for i in range(n):
            row, col = divmod(i, per_row)
            top = y + row * (HEAD + 2 * CELL + 2 * GAP) + HEAD
            cells.append(Cell(LABEL_W + col * (CELL + GAP), top, top + CELL + GAP))
        y += -(-n // per_row) * (HEAD + 2 * CELL + 2 * GAP)
    return cells


def _short(name: str, limit: int = 15) -> str:
    name = name.removeprefix("face-world ")
    return name if len(name) <= limit else name[:limit - 1] + "…"


def compose_model_grid(before: torch.Tensor, after: torch.Tensor, labels: list[tuple[str, str]], n_forgotten: int,
                       per_row: int = PER_ROW) -> Image.Image:
    """uint8 renders (N, 3, S, S) by the base model and by the model -> the labelled wall of tiles; ``labels``:
    two short lines per person (who, at what setting)."""
    n = len(before)
    if n == 0:
        im = Image.new("RGB", (LABEL_W + 4 * (CELL + GAP), 2 * SECTION), (255, 255, 255))
        ImageDraw.Draw(im).text((8, 8), "No one is forgotten in this session yet.", fill=(0, 0, 0), font=_font(15))
        return im
    cells = model_cells(n_forgotten, n - n_forgotten, per_row)
    pix = torch.cat([before, after])
    if pix.shape[-1] != CELL:
        pix = quantize(F.interpolate(pix.float() / 255, size=(CELL, CELL), mode="bicubic", align_corners=False))
    pix = pix.permute(0, 2, 3, 1).numpy()
    width = LABEL_W + min(n, per_row) * (CELL + GAP)
    height = max(c.y_model for c in cells) + CELL + GAP
    canvas = np.full((height, width, 3), 255, np.uint8)
    for i, c in enumerate(cells):
        canvas[c.y_base:c.y_base + CELL, c.x:c.x + CELL] = pix[i]
        canvas[c.y_model:c.y_model + CELL, c.x:c.x + CELL] = pix[n + i]
    im = Image.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    font, small = _font(15), _font(12)
    headings = [(0, n_forgotten, f"forgotten in this session ({n_forgotten}): each request's adapter at its own "
                 "setting", (150, 30, 30)),
                (n_forgotten, n - n_forgotten, "others: the model must draw them as the original did", (30, 100, 30))]
    for first, count, heading, colour in headings:
        if count:
            draw.text((8, cells[first].y_base - HEAD - SECTION + 8), heading, fill=colour, font=font)
    for i, c in enumerate(cells):
        line1, line2 = labels[i]
        draw.text((c.x + 2, c.y_base - HEAD + 1), line1, fill=(0, 0, 0), font=small)
        draw.text((c.x + 2, c.y_base - HEAD + 16), line2, fill=(90, 90, 90), font=small)
        if i % per_row == 0 or i == n_forgotten:
            draw.text((8, c.y_base + CELL // 2 - 8), "original", fill=(0, 0, 0), font=font)
            draw.text((8, c.y_model + CELL // 2 - 8), "model", fill=(0, 0, 0), font=font)
    return im


def label_of(key: str, name: str, u: float | None, t: float | None) -> tuple[str, str]:
    """A tile's two lines: "3 · #200003" and "u 0.75 (t 1.21)" (None: a person no request is about)."""
    if u is None or t is None:
        return _short(name, 19), "not forgotten"
    return f"{key} · {_short(name)}", f"u {u:.2f} (t {t:.2f})"


REQUEST_COLUMNS = ["key", "identity", "status", "u (forgetting)", "t (ODE time)", "judge: same person at u",
                   "judge: others kept at u"]


def judge_at(curve: dict | None, u: float) -> tuple[float | None, float | None]:
    """The judge's figures at slider position ``u`` from an identity's forgetting curve (interpolated between its
    points): its cosine to the original and the others' mean; (None, None) without a curve."""
    if curve is None:
        return None, None
    target = curve.get("id_target")
    same = float(np.interp(u, curve["u"], target)) if target is not None else None
    return same, float(np.interp(u, curve["u"], curve["retention"]))


def table_rows(rows: list[dict]) -> list[list[str]]:
    """``Studio.requests`` as the page's table (``REQUEST_COLUMNS``): numbers as short text, blank until known."""
    def num(x: float | None, digits: int) -> str:
        return "" if x is None else f"{x:.{digits}f}"

    out = []
    for r in rows:
        same = num(r["same"], 3)
        if r["same"] is not None and r["threshold"] is not None:
            same += " · still the person" if r["same"] >= r["threshold"] else " · someone else"
        out.append([r["key"], r["name"], r["status"], num(r["u"], 2), num(r["t"], 2), same, num(r["kept"], 3)])
    return out
