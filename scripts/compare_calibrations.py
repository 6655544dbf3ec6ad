"""Compare dial calibrations on adapters saved by `scripts/tune_engine.py` (validation ids only): the table behind
the calibration defaults in docs/engine.md.

    IDS=100600,100601 SAVE=runs/tune python scripts/tune_engine.py P0        # train and keep the adapters
    python scripts/compare_calibrations.py runs/tune/P0-100600.safetensors runs/tune/P0-100601.safetensors
    python scripts/compare_calibrations.py --drawn 100600-100639     # no training: drawn straight ways

Each adapter is calibrated with every variant below (the loss network and pixels, never the judge) and its dial
measured by the judge at 17 slider positions in the 8 canonical views: evenness of the judge's curve, of pixel
steps, monotone. Training is not repeated: a calibration changes only the map u -> t. The paces are compared over
the whole knob, as in docs/engine.md's table; ``--dial-end`` compares instead where the dial ends (the cosine at
which arcface's fall ends the map), with the judge's reading at the dial's end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
# isort: on
from legato_core import faceworld  # noqa: E402
from legato_core.adapters import ODEAdapter  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.backends.registry import load_judge  # noqa: E402
from legato_core.metrics import AdapterKnob, dial_report  # noqa: E402
from legato_core.ranges import EVALUATION_START, validation_ids_or_exit  # noqa: E402
from legato_core.unlearning.calibration import (  # noqa: E402
    CalibrationConfig,
    KnobProfile,
    identity_fraction,
    knob_knots,
    profile_knob,
)
from legato_core.unlearning.engine import ForgetConfig  # noqa: E402
from legato_core.unlearning.paths import DrawnPath, waypoints  # noqa: E402
from legato_core.unlearning.targets import make_target  # noqa: E402

WHOLE = {"end_at_floor": False}  # the paces were compared over the whole knob (before the dial ended at the floor)
VARIANTS = {
    "blends, cosine (session 15)": CalibrationConfig(envelopes=0, identity_power=1.0, **WHOLE),
    "blends and envelopes, cosine": CalibrationConfig(identity_power=1.0, **WHOLE),
    "blends and envelopes, cos^1.5, pixel tolerance 1.5": CalibrationConfig(identity_power=1.5, pixel_tolerance=1.5,
                                                                          **WHOLE),
    "blends and envelopes, cos^1.5": CalibrationConfig(identity_power=1.5, **WHOLE),
    "blends and envelopes, cos^1.75 (default)": CalibrationConfig(**WHOLE),
    "blends and envelopes, cos^2": CalibrationConfig(identity_power=2.0, **WHOLE),
    "blends and envelopes, cos^1.75, pixel tolerance 1.6": CalibrationConfig(pixel_tolerance=1.6, **WHOLE),
    "blends and envelopes, cos^1.75, pixel tolerance 2": CalibrationConfig(pixel_tolerance=2.0, **WHOLE),
}
# where the dial ends: today's pace over the whole knob, or up to where arcface's cosine first reaches a floor
DIAL_ENDS = {
    "whole knob": CalibrationConfig(**WHOLE),
    "ending at cosine 0 (default)": CalibrationConfig(),
    "ending at cosine 0.1": CalibrationConfig(identity_floor=0.1),
    "ending at cosine 0.2": CalibrationConfig(identity_floor=0.2),
}


def profiles(backend, knob, person: torch.Tensor, s_max: float, variants: dict | None = None
             ) -> dict[str, KnobProfile]:
    """Each variant's profile, measured once: the variants share grid, views and seed, and differ only in how
    the loss network's cosine becomes the identity fraction."""
    variants = VARIANTS if variants is None else variants
    default = CalibrationConfig()
    base = profile_knob(backend, knob, person, s_max, default)
    out = {}
    for name, cfg in variants.items():
        if (cfg.grid, cfg.views, cfg.seed) != (default.grid, default.views, default.seed):
            raise ValueError(f"{name}: a variant with its own grid or views needs its own profile")
        out[name] = KnobProfile(base.values, base.similarity, identity_fraction(base.similarity, cfg), base.pixels)
    return out


def dials(backend, judge, views, knob, person: torch.Tensor, target: torch.Tensor, s_max: float,
          variants: dict | None = None) -> dict:
    """Per variant: (judge evenness, pixel evenness, monotone, the judge at the dial's end) of the dial it
    calibrates, at 17 positions."""
    variants = VARIANTS if variants is None else variants
    out = {}
    for name, profile in profiles(backend, knob, person, s_max, variants).items():
        knots, _ = knob_knots(profile, variants[name])
        rep = dial_report(backend, knob, person, target,
                          lambda u, k=knots: float(np.interp(u, np.linspace(0, 1, len(k)), k)), views, judge,
                          manifold_positions=())
        out[name] = (rep["evenness"], rep["pixel_evenness"], rep["monotone"], rep["judge_curve"][-1])
    return out


def table(rows: dict[str, list[tuple]]) -> str:
    """rows: variant -> [(id, judge evenness, pixel evenness, monotone[, judge at the end]), ...]; per-id figures
    up to 10 ids; the judge at the dial's end (mean / max) where the rows carry it."""
    ends = all(len(x) > 4 for r in rows.values() for x in r)
    lines = ["| calibration | judge evenness (per id, or median) | <= 1.5 | <= 2.0 | pixel evenness max | monotone |"
             + (" judge at the end, mean / max |" if ends else ""),
             "|---|---|---|---|---|---|" + ("---|" if ends else "")]
    for name, r in rows.items():
        ev = [x[1] for x in r]
        shown = " / ".join(f"{x:.2f}" for x in ev) if len(r) <= 10 else f"median {statistics.median(ev):.2f}"
        end = f" {statistics.mean(x[4] for x in r):+.3f} / {max(x[4] for x in r):+.3f} |" if ends else ""
        lines.append(f"| {name} | {shown} | {sum(x <= 1.5 for x in ev)}/{len(r)} | {sum(x <= 2.0 for x in ev)}/"
                     f"{len(r)} | {max(x[2] for x in r):.2f} | {sum(x[3] for x in r)}/{len(r)} |{end}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapters", nargs="*", help="adapters saved by tune_engine.py (SAVE=DIR), validation ids")
    ap.add_argument("--drawn", metavar="FIRST-LAST",
                    help="instead: the straight way to each validation id's substitute drawn by the base model "
                         "(no adapter; scripts/ideal_dials.py), e.g. 100600-100639")
    ap.add_argument("--dial-end", action="store_true",
                    help="compare where the dial ends (DIAL_ENDS) instead of the paces over the whole knob")
    args = ap.parse_args()
    variants = DIAL_ENDS if args.dial_end else VARIANTS
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    backend = EmbeddedFaceBackend.from_pretrained(None)
    judge = load_judge("embedded", None, backend)
    views = backend.canonical_views(8)
    rows = {name: [] for name in variants}
    cases = []  # (id, a function that makes (knob, person latent, target latent, s_max)): one at a time
    if args.drawn:
        first, last = (int(x) for x in args.drawn.split("-"))
        ids = validation_ids_or_exit(first, last - first + 1)

        def drawn(ident: int):
            w_u, _ = backend.invert(faceworld.render([ident], 0))
            # the nearest substitute, as when the table was made (today's default checks 4 candidates' paths)
            w_t, _ = make_target(backend, w_u, replace(ForgetConfig().target, path_candidates=0))
            return DrawnPath(backend, waypoints(backend, w_u[0], w_t[0], "straight")), w_u, w_t, 1.0

        cases = [(i, lambda i=i: drawn(i)) for i in ids]
    for path in map(Path, args.adapters):
        ident = int(path.stem.rsplit("-", 1)[-1])
        if ident >= EVALUATION_START:
            raise SystemExit(f"{path}: calibrations are compared on validation ids, not evaluation ids")

        def saved_adapter(path=path):
            saved = torch.load(path.with_suffix(".pt"), weights_only=True)  # tune_engine's latents beside it
            adapter = ODEAdapter.load(path, backend)
            return AdapterKnob(backend, [adapter]), saved["w"], saved["target"][:1], adapter.config.t_max

        cases.append((ident, saved_adapter))
    for ident, make in cases:
        knob, person, target, s_max = make()
        for name, (ev, px, mono, end) in dials(backend, judge, views, knob, person, target, s_max,
                                               variants).items():
            rows[name].append((ident, ev, px, mono, end))
        print(ident, json.dumps({n: [round(x, 2) if isinstance(x, float) else x for x in r[-1][1:]]
                                 for n, r in rows.items()}), flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
