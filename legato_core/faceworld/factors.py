"""Identity factors as one flat vector: what the face-world generator is conditioned on.

Every factor the renderer reads becomes a coordinate in about [-1, 1]: scalars by their sampling range, colours
per channel, categories one-hot. Factors the picture cannot show are zeroed (a mole's position when there is no
mole, the frame colour when there are no glasses), so the vector is a function of what is drawn, and an encoder
can learn to read it back from an image.
"""

from __future__ import annotations

import torch

from .attributes import FACIAL_HAIR, GLASSES, HAIR_STYLES

# scalar factor -> its sampling range in ``attributes._identity_row``
SCALAR_RANGES: dict[str, tuple[float, float]] = {
    "head_w": (0.36, 0.48), "head_h": (0.46, 0.58), "jaw": (0.45, 1.0),
    "eye_spacing": (0.13, 0.21), "eye_y": (-0.10, 0.02), "eye_size": (0.050, 0.085), "eye_aspect": (0.40, 0.80),
    "brow_thick": (0.010, 0.032), "brow_tilt": (-0.35, 0.35), "brow_len": (0.055, 0.110),
    "nose_len": (0.08, 0.19), "nose_w": (0.030, 0.075), "mouth_w": (0.07, 0.16), "mouth_y": (0.24, 0.33),
    "lip_thick": (0.010, 0.030), "ear_size": (0.05, 0.10), "hairline": (-0.42, -0.22),
    "mole": (0.0, 1.0), "mole_x": (-0.25, 0.25), "mole_y": (0.02, 0.28), "freckles": (0.0, 1.0), "blush": (0.0, 0.6),
}
COLOR_KEYS = ("skin", "iris", "brow_color", "lip_color", "hair_color", "glasses_color")
CATEGORY_SIZES = {"hair_style": len(HAIR_STYLES), "facial_hair": len(FACIAL_HAIR), "glasses": len(GLASSES)}
FACTOR_DIM = len(SCALAR_RANGES) + 3 * len(COLOR_KEYS) + sum(CATEGORY_SIZES.values())


def identity_vector(identity: dict[str, torch.Tensor]) -> torch.Tensor:
    """Identity factors (as from ``sample_identities``) -> (B, FACTOR_DIM) float vectors."""
    mole = identity["mole"].float()
    has_glasses = (identity["glasses"].round() > 0).float()
    cols = []
    for name, (lo, hi) in SCALAR_RANGES.items():
        x = (identity[name].float() - lo) / (hi - lo) * 2 - 1
        if name in ("mole_x", "mole_y"):
            x = x * mole  # no mole: its position is not in the picture
        cols.append(x[:, None])
    for name in COLOR_KEYS:
        c = identity[name].float() * 2 - 1
        if name == "glasses_color":
            c = c * has_glasses[:, None]
        cols.append(c)
    for name, n in CATEGORY_SIZES.items():
        cols.append(torch.nn.functional.one_hot(identity[name].round().long().clamp(0, n - 1), n).float())
    out = torch.cat(cols, dim=1)
    assert out.shape[1] == FACTOR_DIM
    return out


def category_slices() -> dict[str, slice]:
    """Where each categorical factor sits in the factor vector, plus what only shows with one: the mole's presence
    and position (``mole``), the glasses' frame colour (``glasses_color``). A staged path to another face switches
    these a group at a time (``CATEGORY_GROUPS``) instead of blending them."""
    names = list(SCALAR_RANGES)
    start = len(names) + 3 * len(COLOR_KEYS)
    out = {}
    for name, n in CATEGORY_SIZES.items():
        out[name] = slice(start, start + n)
        start += n
    out["mole"] = slice(names.index("mole"), names.index("mole_y") + 1)  # mole, mole_x, mole_y are adjacent
    g = len(names) + 3 * COLOR_KEYS.index("glasses_color")
    out["glasses_color"] = slice(g, g + 3)
    return out


# the categories a viewer sees switch, each group at once: hair style, facial hair, glasses (with their colour), mole
CATEGORY_GROUPS: tuple[tuple[str, ...], ...] = (("hair_style",), ("facial_hair",), ("glasses", "glasses_color"),
                                                ("mole",))


def shown_category(factors: torch.Tensor, name: str) -> int:
    """The category a factor vector (D,) shows for ``name`` (an encoder's guess is soft: its largest entry); for
    the mole, 1 if present."""
    part = factors[category_slices()[name]]
    return int(part[0] > 0) if name == "mole" else int(part.argmax())

