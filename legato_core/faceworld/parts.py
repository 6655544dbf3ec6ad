"""Where a face-world picture's thin parts are, found by rendering the same face without them.

Glasses frames, facial hair, moles and freckles cover a few per cent of a 64-px face, so a mean over the image
barely notices whether a generator draws them. The face world can say exactly which pixels each part changes:
render the face again with the part switched off and compare. Training weights those pixels
(``generator.factor_training``), and evaluation scores how much of each part a render recovers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .renderer import render_faces

# switched off by a zero: category 0 is "none" for glasses and facial hair, mole and freckles are strengths
THIN_PARTS = ("glasses", "facial_hair", "mole", "freckles")


def _check_parts(parts: tuple[str, ...]) -> None:
    unknown = set(parts) - set(THIN_PARTS)
    if unknown:
        raise ValueError(f"not a thin part: {sorted(unknown)}; choose from {THIN_PARTS}")


def without_parts(identity: dict[str, torch.Tensor], parts: tuple[str, ...] = THIN_PARTS) -> dict[str, torch.Tensor]:
    """The same identities with ``parts`` switched off."""
    _check_parts(parts)
    return {**identity, **{k: torch.zeros_like(identity[k]) for k in parts}}


def _without_and_changed(identity: dict[str, torch.Tensor], view: dict[str, torch.Tensor], images: torch.Tensor,
                         parts: tuple[str, ...], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(the faces rendered without ``parts``, (B, 1, H, W) {0, 1} mask of the pixels that differ by more than
    ``threshold`` in some channel)."""
    plain = render_faces(without_parts(identity, parts), view, images.shape[-1])
    return plain, ((images - plain).abs().amax(dim=1, keepdim=True) > threshold).float()


def part_mask(identity: dict[str, torch.Tensor], view: dict[str, torch.Tensor], images: torch.Tensor,
              parts: tuple[str, ...] = THIN_PARTS, threshold: float = 0.03, grow: int = 0) -> torch.Tensor:
    """(B, 1, H, W) in {0, 1}: pixels ``parts`` change by more than ``threshold`` in some channel, grown by
    ``grow`` pixels. ``images``: the faces as rendered with every part (``render_faces(identity, view)``)."""
    _, changed = _without_and_changed(identity, view, images, parts, threshold)
    return F.max_pool2d(changed, 2 * grow + 1, stride=1, padding=grow) if grow else changed


def part_recovery(renders: torch.Tensor, identity: dict[str, torch.Tensor], view: dict[str, torch.Tensor],
                  images: torch.Tensor, part: str, threshold: float = 0.03) -> tuple[float, int]:
    """How much of ``part`` the renders draw: 1 - L1(render, truth) / L1(face without the part, truth) over the
    pixels the part changes, pooled over the faces that have it. 0: as if the part were absent (or worse, below
    0); 1: exact. Returns (recovery, number of faces with the part); (nan, 0) when none has it."""
    plain, mask = _without_and_changed(identity, view, images, (part,), threshold)
    has = mask.flatten(1).sum(1) > 0
    if not bool(has.any()):
        return float("nan"), 0
    err = ((renders - images).abs() * mask)[has].sum()
    absent = ((plain - images).abs() * mask)[has].sum()
    return float(1 - err / absent), int(has.sum())


def identities_with_parts(first_identity: int, per_part: int, parts: tuple[str, ...] = THIN_PARTS,
                          search: int = 4096, chunk: int = 64) -> list[int]:
    """For each of ``parts`` in turn, the first ``per_part`` identities from ``first_identity`` on whose view-0
    picture visibly shows it (``part_mask`` non-empty) and that are not picked already.

    A contact sheet of consecutive identities can miss a part altogether (ids 1,000,000-1,000,007 have no
    glasses); this rule fills the rows from the part alone, never from how well a generator draws it.
    """
    _check_parts(parts)  # before any rendering
    from . import render, sample_identities, sample_views  # the package's own entry points

    found: dict[str, list[int]] = {p: [] for p in parts}
    picked: set[int] = set()
    for start in range(first_identity, first_identity + search, chunk):
        ids = list(range(start, start + chunk))
        identity, view, images = sample_identities(ids), sample_views(ids, 0), render(ids, 0)
        shows = {p: part_mask(identity, view, images, (p,)).flatten(1).sum(1) > 0 for p in parts}
        for p in parts:  # ids in order within each part; earlier parts pick first
            for i, ident in enumerate(ids):
                if len(found[p]) < per_part and ident not in picked and bool(shows[p][i]):
                    found[p].append(ident)
                    picked.add(ident)
        if all(len(v) == per_part for v in found.values()):
            return [i for p in parts for i in found[p]]
    missing = [p for p, v in found.items() if len(v) < per_part]
    raise ValueError(f"fewer than {per_part} identities show {missing} among the {search} from {first_identity}")
