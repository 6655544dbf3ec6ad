"""Compare dial calibrations on adapters saved by `scripts/tune_engine.py` (validation ids only): the table behind
the calibration defaults in docs/engine.md.

    IDS=100600,100601 SAVE=runs/tune python scripts/tune_engine.py P0        # train and keep the adapters
    python scripts/compare_calibrations.py runs/tune/P0-100600.safetensors runs/tune/P0-100601.safetensors

Each adapter is calibrated with every variant below (the loss network and pixels, never the judge) and its dial
measured by the judge at 17 slider positions in the 8 canonical views: evenness of the judge's curve, of pixel
steps, monotone. Training is not repeated: a calibration changes only the map u -> t.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import numpy as np  # noqa: E402
import torch  # noqa: E402
# isort: on
from legato_core.adapters import ODEAdapter  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.backends.registry import load_judge  # noqa: E402
from legato_core.metrics import AdapterKnob, dial_report  # noqa: E402
from legato_core.ranges import EVALUATION_START  # noqa: E402
from legato_core.unlearning.calibration import CalibrationConfig, knob_knots, profile_knob  # noqa: E402

VARIANTS = {
    "blends, cosine (session 15)": CalibrationConfig(envelopes=0, identity_power=1.0),
    "blends and envelopes, cosine": CalibrationConfig(identity_power=1.0),
    "blends and envelopes, cos^1.5, pixel tolerance 1.5": CalibrationConfig(identity_power=1.5, pixel_tolerance=1.5),
    "blends and envelopes, cos^1.75 (default)": CalibrationConfig(),
    "blends and envelopes, cos^2": CalibrationConfig(identity_power=2.0),
    "blends and envelopes, cos^1.75, pixel tolerance 1.6": CalibrationConfig(pixel_tolerance=1.6),
    "blends and envelopes, cos^1.75, pixel tolerance 2": CalibrationConfig(pixel_tolerance=2.0),
}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", 2)))
    backend = EmbeddedFaceBackend.from_pretrained(None)
    judge = load_judge("embedded", None, backend)
    views = backend.canonical_views(8)
    rows = {name: [] for name in VARIANTS}
    for path in map(Path, sys.argv[1:]):
        saved = torch.load(path.with_suffix(".pt"), weights_only=True)  # tune_engine's latents beside the adapter
        ident = int(path.stem.rsplit("-", 1)[-1])
        if ident >= EVALUATION_START:
            raise SystemExit(f"{path}: calibrations are compared on validation ids, not evaluation ids")
        adapter = ODEAdapter.load(path, backend)
        knob = AdapterKnob(backend, [adapter])
        for name, cfg in VARIANTS.items():
            knots, _ = knob_knots(profile_knob(backend, knob, saved["w"], adapter.config.t_max, cfg), cfg)
            rep = dial_report(backend, knob, saved["w"], saved["target"][:1],
                              lambda u, k=knots: float(np.interp(u, np.linspace(0, 1, len(k)), k)), views, judge,
                              manifold_positions=())
            rows[name].append((ident, rep["evenness"], rep["pixel_evenness"], rep["monotone"]))
        print(path.name, json.dumps({n: [round(x, 2) if isinstance(x, float) else x for x in r[-1][1:]]
                                     for n, r in rows.items()}), flush=True)
    print("\n| calibration | judge evenness per id | <= 1.5 | <= 2.0 | pixel evenness max | monotone |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        judge_even = [x[1] for x in r]
        print(f"| {name} | {' / '.join(f'{x:.2f}' for x in judge_even)} | {sum(x <= 1.5 for x in judge_even)}/{len(r)}"
              f" | {sum(x <= 2.0 for x in judge_even)}/{len(r)} | {max(x[2] for x in r):.2f} | "
              f"{sum(x[3] for x in r)}/{len(r)} |")


if __name__ == "__main__":
    main()
