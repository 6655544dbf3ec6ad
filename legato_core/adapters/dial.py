"""The dial: what a slider position u in [0, 1] means, as an intensity t of one trained adapter.

A raw knob (t = u * t_max) is uneven: an adapter's identity change is not spread evenly over t. A
:class:`DialMap` is a monotone piecewise-linear map u -> t measured after training (see
``legato_core.unlearning.calibration``) so that equal steps of u take equal steps away from the person. It is
saved in the adapter file and tied to the adapter's weights: a map is never applied to another adapter.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass

import torch


def fields_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Content hash of an adapter's weights (the tensors its file stores)."""
    h = hashlib.sha256()
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class DialMap:
    """t at evenly spaced slider positions u = 0, 1/(n-1), ..., 1 (linear between them)."""

    t: tuple[float, ...]
    measured_by: str  # which network (never the judge) measured the identity change, e.g. "arcface"
    adapter_digest: str  # fields_digest of the adapter it was measured on

    def __post_init__(self):
        t = tuple(float(x) for x in self.t)
        object.__setattr__(self, "t", t)
        if len(t) < 2 or t[0] != 0 or any(b < a for a, b in itertools.pairwise(t)):
            raise ValueError(f"a dial map starts at t = 0 and never decreases, got {t}")

    def t_at(self, u: float) -> float:
        """The intensity t at slider position u in [0, 1] (a ValueError outside it)."""
        u = float(u)
        if not 0 <= u <= 1 + 1e-9:
            raise ValueError(f"the slider position u must be in [0, 1], got {u}")
        x = min(u, 1.0) * (len(self.t) - 1)
        i = min(int(x), len(self.t) - 2)
        return self.t[i] + (x - i) * (self.t[i + 1] - self.t[i])

    def u_at(self, t: float) -> float:
        """The first slider position whose t is ``t`` (clamped to the map's range): where a raw t is stored, so that
        ``t_at(u_at(t)) == t`` (to float rounding) even where the map is flat."""
        knots = self.t
        t = min(max(float(t), 0.0), knots[-1])
        j = bisect.bisect_left(knots, t)  # the first knot at or past t
        if j == 0:
            return 0.0
        if j >= len(knots):
            return 1.0
        return (j - 1 + (t - knots[j - 1]) / (knots[j] - knots[j - 1])) / (len(knots) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DialMap:
        d = json.loads(text)
        return cls(tuple(d["t"]), d["measured_by"], d["adapter_digest"])
