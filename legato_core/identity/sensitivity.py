"""What an identity network looks at: its cosine between a face and the same face with one factor changed.

"Forgotten" means "the judge no longer says same person". This table says which parts of a face-world person
move the judge and which it hardly sees, so a reader knows what forgetting can and cannot mean: a factor with a
cosine near 1 can stay unchanged in a forgotten face, and changing it alone forgets nothing.
"""

from __future__ import annotations

import torch

from ..faceworld import IDENTITY_KEYS, render_faces, sample_identities, sample_views
from ..faceworld.factors import CATEGORY_SIZES
from .model import IdentityModel

# factors that are only drawn when another one is present: measured on faces that have it
DRAWN_ONLY_WITH = {"mole_x": "mole", "mole_y": "mole", "glasses_color": "glasses"}


def _changed(identity: dict[str, torch.Tensor], donor: dict[str, torch.Tensor], key: str,
             gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {k: v.clone() for k, v in identity.items()}
    if key in CATEGORY_SIZES:  # a category always moves to another value
        n = CATEGORY_SIZES[key]
        shift = torch.randint(1, n, (len(out[key]),), generator=gen).float()
        out[key] = (out[key].round() + shift) % n
    elif key == "mole":
        out[key] = 1 - out[key].round()
    else:  # a fresh draw from the factor's own prior (another person's value)
        out[key] = donor[key].clone()
    return out


@torch.no_grad()
def factor_sensitivity(model: IdentityModel, ids: list[int], seed: int = 0) -> list[dict]:
    """One row per identity factor: mean/min cosine of (face, face with that factor changed), same view.

    Reference rows: the same person in another view, and another person in the same view.
    """
    gen = torch.Generator().manual_seed(seed)
    identity = sample_identities(ids)
    donor = sample_identities([i + len(ids) for i in ids])
    view = sample_views(ids, [0] * len(ids))
    base = model.embed(render_faces(identity, view))
    rows = []
    for key in IDENTITY_KEYS:
        keep = torch.ones(len(ids), dtype=torch.bool)
        if key in DRAWN_ONLY_WITH:
            keep = identity[DRAWN_ONLY_WITH[key]].round() > 0
        cos = (base * model.embed(render_faces(_changed(identity, donor, key, gen), view))).sum(1)[keep]
        rows.append({"factor": key, "faces": int(keep.sum()), "mean_cosine": float(cos.mean()),
                     "min_cosine": float(cos.min()), "same_person_rate": float((cos > model.threshold).float().mean())})
    other_view = (base * model.embed(render_faces(identity, sample_views(ids, [1] * len(ids))))).sum(1)
    other_person = (base * model.embed(render_faces(donor, view))).sum(1)
    for name, cos in (("(reference) same person, another view", other_view),
                      ("(reference) another person, same view", other_person)):
        rows.append({"factor": name, "faces": len(ids), "mean_cosine": float(cos.mean()),
                     "min_cosine": float(cos.min()), "same_person_rate": float((cos > model.threshold).float().mean())})
    return rows
