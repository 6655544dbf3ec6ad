"""The way from the person to their target, as a reference the adapter's solver states can be pinned to.

With the adapter on the identity latent the dial is the solver's path in latent space, and every point of it is
a face the frozen generator draws. The straight line to a substitute blends two faces half way, which is where
the dial leaves the model's manifold when the faces' categories differ (half a pair of glasses, a fading beard).
A staged path (a backend's ``staged_waypoints``; the face world switches categories in factor space) is a
polyline through waypoints instead; ``around_average`` follows the great circle about the average latent (the
chord dips toward the average face, nearer it than the prior draws anyone). ``reference_displacements`` samples a
path at the solver's state times, at equal arc length, as offsets from the person; ``path_pinning`` is the loss
that holds the states to them. An offset, not a point: a view anchor or an adjacency sample moves in parallel with
its person (same offset).
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import torch

PATHS = ("straight", "around_average", "categories_first", "categories_one_by_one", "categories_last", "hair_first")
ARC_WAYPOINTS = 33  # points of the polyline that stands for the great circle of ``around_average``
PACES = ("arc", "segments")  # equal latent arc length per step, or an equal share of the way per segment


def polyline_at(points: list[torch.Tensor], fractions: torch.Tensor, pace: str = "arc") -> torch.Tensor:
    """Points (F, D) at ``fractions`` (F,) in [0, 1] of the polyline through ``points`` (each (D,)): of its arc
    length (``pace`` "arc"; repeated points, zero-length segments, are fine), or with each segment an equal share
    of the way ("segments": a short segment, such as one category switching, takes as long as a long one)."""
    if pace not in PACES:
        raise ValueError(f"unknown pace {pace!r}; choose from {PACES}")
    p = torch.stack(points)
    if pace == "segments":
        n = len(p) - 1
        x = fractions.to(p).clamp(0, 1) * n
        i = x.floor().long().clamp(max=n - 1)
        return p[i] + (x - i)[:, None] * (p[i + 1] - p[i])
    seg = (p[1:] - p[:-1]).norm(dim=1)
    cum = torch.cat([seg.new_zeros(1), seg.cumsum(0)])
    if float(cum[-1]) == 0:
        return p[:1].expand(len(fractions), -1).clone()
    s = fractions.to(p).clamp(0, 1) * cum[-1]
    i = (torch.searchsorted(cum, s, right=True) - 1).clamp(0, len(seg) - 1)
    f = ((s - cum[i]) / seg[i].clamp(min=1e-12)).clamp(0, 1)
    return p[i] + f[:, None] * (p[i + 1] - p[i])


def around_average(w_avg: torch.Tensor, w_u: torch.Tensor, w_target: torch.Tensor,
                   points: int = ARC_WAYPOINTS) -> list[torch.Tensor]:
    """Waypoints (each (D,)) from w_u to w_target along the great circle about ``w_avg``, the distance from it
    changing linearly: every point as far from the average face as the ends are."""
    a, b = w_u - w_avg, w_target - w_avg
    ra, rb = a.norm(), b.norm()
    ua, ub = a / ra.clamp(min=1e-12), b / rb.clamp(min=1e-12)
    angle = torch.arccos((ua * ub).sum().clamp(-1, 1))
    out = [w_u.clone()]
    for s in torch.linspace(0, 1, points)[1:-1]:
        if float(angle) < 1e-6:
            d = ua
        else:
            d = (torch.sin((1 - s) * angle) * ua + torch.sin(s * angle) * ub) / torch.sin(angle)
        out.append(w_avg + ((1 - s) * ra + s * rb) * d)
    return [*out, w_target.clone()]


def waypoints(backend, w_u: torch.Tensor, w_target: torch.Tensor, kind: str, target: dict | None = None,
              row: int = 0) -> list[torch.Tensor]:
    """The waypoints from w_u to w_target (D,) of a path ``kind`` (PATHS): the two ends, or the backend's
    staged waypoints (only backends whose identity has categories a path can switch offer them)."""
    if kind not in PATHS:
        raise ValueError(f"unknown path {kind!r}; choose from {PATHS}")
    if kind == "straight":
        return [w_u, w_target]
    if kind == "around_average":
        return around_average(backend.w_avg.reshape(-1).to(w_u), w_u, w_target)
    staged = getattr(backend, "staged_waypoints", None)
    if staged is None:
        raise ValueError(f"path {kind!r} needs a backend with staged waypoints; {type(backend).__name__} has none "
                         "(use path 'straight')")
    return staged(w_u, w_target, kind, target, row)


@torch.no_grad()
def reference_displacements(backend, w_u: torch.Tensor, w_target: torch.Tensor, kind: str,
                            fractions: torch.Tensor, target: dict | None = None, pace: str = "arc") -> torch.Tensor:
    """Per row of w_u (B, D) and its target (B, D), the path ``kind`` at ``fractions`` (K,) of the way (``pace``:
    see ``polyline_at``), as offsets from the row's w_u -> (B, K, D)."""
    out = []
    for r in range(len(w_u)):
        points = waypoints(backend, w_u[r], w_target[r], kind, target, r)
        out.append(polyline_at(points, fractions, pace) - w_u[r])
    return torch.stack(out)


def path_pinning(states: list[torch.Tensor], starts: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """mean over states s_1 ... s_K of mean((s_k - (start + offset_k))^2): how far the solver's states (each
    (N, D); s_0 is the start itself) are from the reference path (``offsets`` (N, K, D)) started at ``starts``
    (N, D). The units of ``objectives.trajectory_consistency``."""
    if len(states) - 1 != offsets.shape[1]:
        raise ValueError(f"{len(states) - 1} solver states after the start, {offsets.shape[1]} reference points")
    ref = starts[:, None] + offsets
    return torch.stack([(s - ref[:, k]).square().mean() for k, s in enumerate(states[1:])]).mean()


def arc_lengths(points: list[torch.Tensor]) -> float:
    """The polyline's length (latent units)."""
    return float(sum((b - a).norm() for a, b in itertools.pairwise(points)))


class DrawnPath:
    """A knob (``metrics.Knob``) for a path no adapter was trained on: the base model drawing every latent moved
    the same offset along ``points`` (knob value s in [0, 1]: the fraction of the way, ``polyline_at`` with
    ``pace``; s=None: the base). What an adapter that followed the path perfectly would draw."""

    def __init__(self, backend, points: list[torch.Tensor], pace: str = "arc"):
        self.backend, self.points, self.pace = backend, points, pace

    @contextmanager
    def at(self, s: float | None):
        if s is None:
            yield self.backend
            return
        offset = polyline_at(self.points, torch.tensor([float(s)]), self.pace)[0] - self.points[0]
        yield _Moved(self.backend, offset)


class _Moved:
    def __init__(self, backend, offset: torch.Tensor):
        self.backend, self.offset = backend, offset

    def render(self, latents: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return self.backend.render(latents + self.offset, views)
