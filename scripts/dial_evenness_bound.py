"""How even can a dial paced by arcface be for the judge? A bound from the base model's straight paths.

    python scripts/dial_evenness_bound.py docs/dial_paths/results.json --out docs/dial_paths/evenness_bound.md

Reads the judge's and arcface's curves along the straight latent path to each validation person's default
substitute (33 points, written by ``scripts/dial_path_monotonicity.py``) and paces a 17-position dial by arcface
alone, as the calibration's identity fraction does (floored, raised to a power, running minimum), then scores the
judge's evenness on it. Two references: arcface read through the judge's mean response to it, fitted on these same
paths (what a transform fitted to the judge on average buys), and each person's own judge curve (an oracle: 1.0).
What is left between them is how differently the two networks see each person. No rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.metrics import evenness  # noqa: E402
from legato_core.unlearning.calibration import CalibrationConfig, identity_fraction  # noqa: E402

POSITIONS = 17
POWERS = (1.0, 1.5, 1.75, 2.0)
FLOORS = (0.0, None)


def pace_of(curve, power: float = 1.0, floor: float | None = None) -> np.ndarray:
    """A dial's position along the path (0 -> 1, never decreasing), paced by ``curve`` falling as the calibration
    paces by arcface's (``identity_fraction``: floored, raised to ``power``, running minimum)."""
    return identity_fraction(list(curve), CalibrationConfig(identity_power=power, identity_floor=floor))


def judge_on_dial(pace: np.ndarray, judge: np.ndarray) -> np.ndarray:
    """The judge's curve at POSITIONS slider positions of a dial whose position is ``pace`` along the path: each
    position at the first path point where the pace reaches it, so a floored pace ends the dial where it first
    reaches 1 (arcface's floor), not at the path's end as the calibration's ``invert`` does."""
    s = np.linspace(0, 1, len(judge))
    pace = np.maximum.accumulate(pace) + np.arange(len(pace)) * 1e-12  # strictly rising for interpolation
    return np.interp(np.interp(np.linspace(0, 1, POSITIONS), pace, s), s, judge)


def pooled_map(paths: list[dict], bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The judge's mean cosine at each level of arcface's over all paths, made non-decreasing in arcface."""
    a = np.concatenate([p["arcface"] for p in paths])
    j = np.concatenate([p["judge"] for p in paths])
    edges = np.linspace(a.min(), a.max() + 1e-9, bins + 1)
    idx = np.digitize(a, edges) - 1
    keep = [b for b in range(bins) if (idx == b).any()]
    centres = np.array([a[idx == b].mean() for b in keep])
    return centres, np.maximum.accumulate(np.array([j[idx == b].mean() for b in keep]))


def table(paths: list[dict]) -> list[dict]:
    rows = []

    def row(name: str, paces: list[np.ndarray]) -> None:
        ev = np.array([evenness(judge_on_dial(pace, np.asarray(p["judge"]))) for pace, p in zip(paces, paths,
                                                                                               strict=True)])
        rows.append({"pace": name, "le_1_5": int((ev <= 1.5).sum()), "le_2_0": int((ev <= 2.0).sum()),
                     "median": float(np.median(ev)), "paths": len(paths)})

    row("path fraction (the raw knob)", [np.linspace(0, 1, len(p["judge"])) for p in paths])
    for floor in FLOORS:
        for power in POWERS:
            label = f"arcface, 1 - cos^{power:g}" + (f", floored at {floor:g}" if floor is not None else "")
            row(label, [pace_of(p["arcface"], power, floor) for p in paths])
    centres, values = pooled_map(paths)
    row("arcface through the judge's mean response to it (fitted on these paths)",
        [pace_of(np.interp(p["arcface"], centres, values)) for p in paths])
    row("the judge's own curve (oracle)", [pace_of(p["judge"]) for p in paths])
    return rows


def markdown(rows: list[dict], command: str) -> str:
    n = rows[0]["paths"]
    lines = [f"`{command}`", "", f"{n} validation people, the straight path to the default substitute; judge evenness "
             f"at {POSITIONS} positions of a dial paced by:", "",
             "| pace | judge evenness ≤ 1.5 | ≤ 2.0 | median |", "|---|---|---|---|"]
    lines += [f"| {r['pace']} | {r['le_1_5']}/{n} | {r['le_2_0']}/{n} | {r['median']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths_json", help="results.json of scripts/dial_path_monotonicity.py")
    ap.add_argument("--out", help="write the markdown table here too")
    args = ap.parse_args()
    data = json.loads(Path(args.paths_json).read_text())
    ceiling = str(data["summary"]["default_ceiling"]) if "default_ceiling" in data["summary"] else "-0.1"
    paths = [p["paths"][ceiling] for p in data["people"]]
    text = markdown(table(paths), "python scripts/dial_evenness_bound.py " + " ".join(sys.argv[1:]))
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
