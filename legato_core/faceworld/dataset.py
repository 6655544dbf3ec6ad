"""Pre-rendered face-world image sets (uint8, in memory) for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .attributes import sample_identities, sample_views
from .renderer import render_faces


def render_set(ids: Sequence[int], views_per_id: int, size: int = 64, first_view: int = 0, chunk: int = 256,
               progress: bool = True, desc: str = "rendering") -> tuple[torch.Tensor, torch.Tensor]:
    """Every id in ``views_per_id`` views; returns (uint8 images (N,3,S,S), labels (N,) = index into ids)."""
    flat_ids = [i for i in ids for _ in range(views_per_id)]
    flat_views = [first_view + v for _ in ids for v in range(views_per_id)]
    labels = torch.arange(len(ids)).repeat_interleave(views_per_id)
    out = torch.empty(len(flat_ids), 3, size, size, dtype=torch.uint8)
    for s in tqdm(range(0, len(flat_ids), chunk), desc=desc, disable=not progress, unit="chunk", mininterval=15):
        ident = sample_identities(flat_ids[s:s + chunk])
        view = sample_views(flat_ids[s:s + chunk], flat_views[s:s + chunk])
        out[s:s + chunk] = (render_faces(ident, view, size) * 255).round().to(torch.uint8)
    return out, labels


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255.0
