"""The procedural face world: unbounded identities, any number of views, rendered offline on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .attributes import (
    FACIAL_HAIR,
    GLASSES,
    HAIR_STYLES,
    IDENTITY_KEYS,
    VIEW_DIM,
    VIEW_KEYS,
    VIEW_RANGES,
    decode_view,
    encode_view,
    frontal_view,
    random_view_vectors,
    sample_identities,
    sample_views,
)
from .renderer import render_faces
from .sheet import contact_sheet, save_png

__all__ = [
    "FACIAL_HAIR", "GLASSES", "HAIR_STYLES", "IDENTITY_KEYS", "VIEW_DIM", "VIEW_KEYS", "VIEW_RANGES", "contact_sheet",
    "decode_view", "encode_view", "frontal_view", "random_view_vectors",
    "render", "render_faces", "sample_identities", "sample_views", "save_png",
]


def render(ids: Sequence[int] | int, views: Sequence[int] | int = 0, size: int = 64,
           frontal: bool = False) -> torch.Tensor:
    """Render identities ``ids`` in view indices ``views`` (broadcast); (B, 3, size, size) in [0, 1]."""
    identity = sample_identities(ids)
    b = identity["head_w"].shape[0]
    if frontal:
        view = frontal_view(b)
    else:
        view = sample_views(ids, views)
        if view["yaw"].shape[0] != b:  # one id, several views
            identity = {k: v.expand(view["yaw"].shape[0], *v.shape[1:]).clone() for k, v in identity.items()}
    return render_faces(identity, view, size)
