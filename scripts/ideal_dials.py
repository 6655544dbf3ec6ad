"""What dial does each way to the substitute give at best? The base model moved along it, validation ids.

    python scripts/ideal_dials.py --first-identity 100600 --count 40 --out docs/ideal_dials

An adapter on the identity latent that followed a path perfectly would draw, at each knob value, the base model's
render of the person's latent moved that far along the path. This script draws exactly that, for each way in
``WAYS``, calibrates it with the library's calibration (the loss network and pixels, as after training) and scores
it with the library's dial measures (``metrics.dial_report``: the judge's evenness at 17 slider positions,
monotone, pixel evenness, on-manifold PSNR, sharpness). No adapter is trained, so many people can be compared:
what is left over here is the path's own doing, not training's. Validation ids only: this chooses defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads

# name -> (path kind of unlearning/paths.py, pace, what the table calls it, {"target": TargetConfig fields of its
# substitute, "calibration": CalibrationConfig fields of its dial}); every way names what the defaults changed, so
# that its rows do not change meaning when they do
NEAREST = {"path_candidates": 0}  # the nearest qualifying substitute: the default to session 27
WHOLE = {"end_at_floor": False}  # the dial over the whole knob: the default to session 27
CHECKED = {"path_candidates": 4, "path_positions": (0.25, 0.5, 0.75), "path_min_db": 38.0,
           "path_min_sharpness": 0.0}
EARLY = {**CHECKED, "path_positions": (0.2, 0.35, 0.5, 0.7)}
SHARP = {**EARLY, "path_min_sharpness": 0.9}  # today's default
FIRST_WAYS = ("straight", "around_average", "one_by_one", "categories_first")  # compared on the same 11 people
WAYS = {
    "straight": ("straight", "arc", "straight to the nearest substitute, the whole knob (the default to session 27)",
                 {"target": NEAREST, "calibration": WHOLE}),
    "around_average": ("around_average", "arc", "around the average face", {"target": NEAREST, "calibration": WHOLE}),
    "one_by_one": ("categories_one_by_one", "segments", "categories one by one, by segments",
                   {"target": NEAREST, "calibration": WHOLE}),
    "categories_first": ("categories_first", "arc", "categories first", {"target": NEAREST, "calibration": WHOLE}),
    "straight_checked": ("straight", "arc", "straight, to the nearest of 4 substitutes whose path re-renders at "
                         "38 dB at 0.25, 0.5, 0.75 of the way", {"target": CHECKED, "calibration": WHOLE}),
    "straight_checked_early": ("straight", "arc", "the same at 0.2, 0.35, 0.5, 0.7 of the way",
                               {"target": EARLY, "calibration": WHOLE}),
    "straight_checked_sharp": ("straight", "arc", "the same, also keeping 0.9 of the ends' sharpness",
                               {"target": SHARP, "calibration": WHOLE}),
    "straight_to_floor": ("straight", "arc", "straight to the nearest substitute, the dial ending at arcface's floor",
                          {"target": NEAREST, "calibration": {"end_at_floor": True}}),
    "checked_sharp_to_floor": ("straight", "arc", "the checked sharp substitute, the dial ending at arcface's floor "
                               "(default)", {"target": SHARP, "calibration": {"end_at_floor": True}}),
}


def summarise(people) -> dict:
    people = list(people)
    out = {"people": len(people), "ways": {}}
    for name in WAYS:
        rows = [p["ways"][name] for p in people if name in p["ways"]]
        if not rows:
            continue
        ev = [r["evenness"] for r in rows]
        out["ways"][name] = {
            "people": len(rows),
            "judge_evenness_median": statistics.median(ev),
            "judge_evenness_le_1_5": sum(e <= 1.5 for e in ev),
            "judge_evenness_le_2_0": sum(e <= 2.0 for e in ev),
            "pixel_evenness_le_2_0": sum(r["pixel_evenness"] <= 2.0 for r in rows),
            "monotone": sum(r["monotone"] for r in rows),
            "manifold_ge_36": sum(min(r["manifold_db"].values()) >= 36 for r in rows),
            "manifold_min_median": statistics.median(min(r["manifold_db"].values()) for r in rows),
            "sharpness_ge_0_85": sum(r["sharpness_min"] >= 0.85 for r in rows),
            "judge_end_mean": statistics.mean(r["judge_curve"][-1] for r in rows),
            "length_mean": statistics.mean(r["length"] for r in rows)}
    return out


def markdown(summary: dict, command: str, every_way: dict | None = None) -> str:
    """The table; with ``every_way`` (the summary of only the people drawn each of ``FIRST_WAYS``), that too."""
    n = summary["people"]
    lines = [f"`{command}`", "", f"{n} validation people; each way drawn by the base model, calibrated by the "
             "loss network and pixels, scored at 17 slider positions in the 8 canonical views (judge).", "",
             *_table(summary)]
    if every_way is not None:
        lines += ["", f"The {every_way['people']} people drawn each of the first four ways:", "", *_table(every_way)]
    return "\n".join(lines) + "\n"


def _table(summary: dict) -> list[str]:
    lines = ["| way to the substitute | judge evenness median | ≤ 1.5 | ≤ 2.0 | pixel evenness ≤ 2.0 | monotone "
             "| on-manifold ≥ 36 dB (lowest position, median dB) | sharpness ≥ 0.85 | judge at the end | length |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["ways"].items():
        k = s["people"]
        lines.append(f"| {WAYS[name][2]} | {s['judge_evenness_median']:.2f} | {s['judge_evenness_le_1_5']}/{k} | "
                     f"{s['judge_evenness_le_2_0']}/{k} | {s['pixel_evenness_le_2_0']}/{k} | {s['monotone']}/{k} | "
                     f"{s['manifold_ge_36']}/{k} ({s['manifold_min_median']:.1f}) | {s['sharpness_ge_0_85']}/{k} | "
                     f"{s['judge_end_mean']:+.3f} | {s['length_mean']:.2f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-identity", type=int, default=100_600)
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ways", default=",".join(WAYS), help="which of the ways, comma separated")
    ap.add_argument("--out", default="docs/ideal_dials")
    ap.add_argument("--table-only", action="store_true",
                    help="draw nothing: write the table again from the folder's people (labels changed)")
    args = ap.parse_args()
    ways = [w.strip() for w in args.ways.split(",")]
    if unknown := [w for w in ways if w not in WAYS]:
        raise SystemExit(f"unknown ways {unknown}; choose from {list(WAYS)}")

    import numpy as np
    import torch

    from legato_core import faceworld
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.backends.registry import load_judge
    from legato_core.metrics import dial_report
    from legato_core.ranges import validation_ids_or_exit
    from legato_core.unlearning.calibration import CalibrationConfig, knob_knots, profile_knob
    from legato_core.unlearning.engine import ForgetConfig
    from legato_core.unlearning.paths import DrawnPath, arc_lengths, waypoints
    from legato_core.unlearning.targets import make_target

    ids = validation_ids_or_exit(args.first_identity, args.count)
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained()
    judge = load_judge("embedded", None, backend)
    views = backend.canonical_views(8)
    cfg = CalibrationConfig()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "people.jsonl"  # one line per person: a stopped run resumes where it was
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            rec = json.loads(line)
            done[rec["identity"]] = rec
    command = "python scripts/ideal_dials.py " + " ".join(sys.argv[1:])
    made_by = []  # every command that drew into this folder: a resumed run adds people or ways
    if (out / "results.json").exists():
        earlier = json.loads((out / "results.json").read_text()).get("made_by", [])
        made_by = [earlier] if isinstance(earlier, str) else list(earlier)
    if command not in made_by and not args.table_only:
        made_by.append(command)
    for i in [] if args.table_only else ids:
        if i in done and all(w in done[i]["ways"] for w in ways):
            continue
        w_u, _ = backend.invert(faceworld.render([i], 0))
        targets = {}  # TargetConfig changes -> the substitute they choose
        rec = done.get(i, {"identity": i, "ways": {}})
        for name in ways:
            if name in rec["ways"]:
                continue
            kind, pace, _, changes = WAYS[name]
            key = json.dumps(changes.get("target", {}), sort_keys=True)
            if key not in targets:
                targets[key] = make_target(backend, w_u, replace(ForgetConfig().target, **changes.get("target", {})))
            w_t, desc = targets[key]
            way_cfg = replace(cfg, **changes.get("calibration", {}))
            points = waypoints(backend, w_u[0], w_t[0], kind, desc)
            knob = DrawnPath(backend, points, pace)
            knots, chosen = knob_knots(profile_knob(backend, knob, w_u, 1.0, way_cfg), way_cfg)
            grid = np.linspace(0, 1, len(knots))

            def position(u: float, grid=grid, knots=knots) -> float:
                return float(np.interp(u, grid, knots))

            rep = dial_report(backend, knob, w_u, w_t, position, views, judge)
            rep = {k: rep[k] for k in ("judge_curve", "evenness", "monotone", "pixel_evenness", "manifold_db",
                                       "sharpness_min", "reach_db")}
            rec["ways"][name] = {**rep, "pace": chosen, "length": arc_lengths(points),
                                 "pool_index": desc.get("pool_index", [None])[0]}
            print(f"{i} {name}: evenness {rep['evenness']:.2f}, monotone {rep['monotone']}, on-manifold "
                  f"{min(rep['manifold_db'].values()):.1f} dB", flush=True)
        done[i] = rec
        partial.write_text("".join(json.dumps(done[k]) + "\n" for k in sorted(done)))
    people = [done[i] for i in ids]
    summary = summarise(people)
    complete = [p for p in people if all(w in p["ways"] for w in FIRST_WAYS)]
    every_way = summarise({**p, "ways": {w: p["ways"][w] for w in FIRST_WAYS}} for p in complete) \
        if complete and len(complete) < len(people) else None
    (out / "results.json").write_text(json.dumps({"made_by": made_by, "summary": summary, "every_way": every_way,
                                                  "people": people}))
    text = markdown(summary, "`, then `".join(made_by), every_way)
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
