"""Which way to the substitute keeps every point of the dial a face the model draws? Base model, validation ids.

    python scripts/dial_path_staging.py --first-identity 100600 --count 16 --out docs/dial_staging

The dial's mid positions go off the model's manifold (issue 27: 4 of 10 acceptance targets re-render below 36 dB
somewhere on u = 1/4 ... 1) where the straight latent path blends two faces whose categories differ (half a pair
of glasses, a fading beard). The face world's identity is a factor vector (scalars, colours, one-hot categories)
that the generator's mapping turns into the latent w, so a path can be staged in factor space instead: first the
categories switch (one waypoint, or one waypoint per category), then the rest moves. Each waypoint is the mapping
of a hybrid factor vector plus the person's residual (w_u - mapping(their factors)), fading out along the way
(``EmbeddedFaceBackend.staged_waypoints``; the engine pins its solver states to the same paths with
``weights.reference_path``). For each validation person (view-0 photo, inverted as the CLI does) and the default
substitute, each path is drawn at 33 points (equal latent arc length) in 8 canonical views and scored: the base model's
re-render PSNR (``metrics.manifold_psnr``) at 1/16 ... 1 of the way, the judge's and arcface's curves (monotone:
never up by more than 0.01), and the judge's and the pixels' evenness at 17 points by arc length. The adapters
are trained to follow the path their trajectory term is given, so the base model's render of a path is what a
dial along it can be at best. Validation ids only: this chooses defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads

POINTS, VIEWS = 33, 8
DIAL_AT = (0.25, 0.5, 0.75, 0.875, 1.0)  # issue 27's on-manifold positions


def score_path(backend, judge, arcface, lat) -> dict:
    import torch

    from legato_core.metrics import central_change, evenness, is_monotone, manifold_psnr, step_evenness

    views = backend.canonical_views(VIEWS)
    with torch.no_grad():
        img = backend.render(lat.repeat_interleave(VIEWS, 0), views.repeat(len(lat), 1))
        img = img.view(len(lat), VIEWS, *img.shape[1:])
        curves = {}
        for name, net in (("judge", judge), ("arcface", arcface)):
            e = net.embed(img.flatten(0, 1)).view(len(lat), VIEWS, -1)
            curves[name] = (e * e[:1]).sum(-1).mean(-1).tolist()
    idx17 = [round(i * (POINTS - 1) / 16) for i in range(17)]
    j17 = [curves["judge"][i] for i in idx17]
    px = [float(central_change(img[a], img[b]).mean()) for a, b in itertools.pairwise(idx17)]
    manifold = [round(float(manifold_psnr(backend, img[i]).mean()), 2) for i in idx17]  # at 0, 1/16, ..., 1
    # where a dial paced by pixels alone (the calibration's pixel blend) puts issue 27's positions
    pace = [0.0, *itertools.accumulate(px)]
    pace = [p / pace[-1] for p in pace] if pace[-1] > 0 else [i / 16 for i in range(17)]
    at_dial = {str(u): manifold[next(i for i, p in enumerate(pace) if p >= u - 1e-9)] for u in DIAL_AT}
    return {"judge": [round(x, 4) for x in curves["judge"]], "arcface": [round(x, 4) for x in curves["arcface"]],
            "judge_monotone": is_monotone(curves["judge"]), "arcface_monotone": is_monotone(curves["arcface"]),
            "judge_evenness": round(evenness(j17), 3), "pixel_evenness": round(step_evenness(px), 3),
            "manifold_db": manifold, "manifold_db_min": min(manifold[1:]),
            "manifold_db_min_arc": min(manifold[4:]), "manifold_db_pixel_dial": at_dial,
            "manifold_db_min_pixel_dial": min(at_dial.values())}


def summarise(people: list[dict]) -> dict:
    from legato_core.unlearning.paths import PATHS

    out = {}
    for kind in PATHS:
        rows = [p["paths"][kind] for p in people]
        out[kind] = {
            "manifold_min_mean": statistics.mean(r["manifold_db_min"] for r in rows),
            "manifold_min_lowest": min(r["manifold_db_min"] for r in rows),
            "manifold_36_all": sum(r["manifold_db_min"] >= 36 for r in rows),
            "manifold_36_arc": sum(r["manifold_db_min_arc"] >= 36 for r in rows),
            "manifold_36_pixel_dial": sum(r["manifold_db_min_pixel_dial"] >= 36 for r in rows),
            "judge_monotone": sum(r["judge_monotone"] for r in rows),
            "arcface_monotone": sum(r["arcface_monotone"] for r in rows),
            "judge_evenness_median": statistics.median(r["judge_evenness"] for r in rows),
            "pixel_evenness_median": statistics.median(r["pixel_evenness"] for r in rows),
            "length_mean": statistics.mean(r["length"] for r in rows)}
    return out


def markdown(summary: dict, n: int, command: str) -> str:
    lines = [f"`{command}`", "", f"{n} validation people, the default substitute, each path at 33 points of equal "
             "latent arc length in 8 canonical views. On-manifold: the base model's re-render PSNR at 17 points "
             "(1/16 ... 1 of the way; ≥ 36 dB at all of them, at 1/4 ... 1, and at issue 27's positions u = 1/4, "
             "1/2, 3/4, 7/8, 1 of a dial paced by the pixels' change); evenness at 17 points by arc length (not "
             "calibrated).", "",
             "| path | ≥ 36 dB everywhere | ≥ 36 dB from 1/4 | ≥ 36 dB at the pixel dial's positions "
             "| lowest anywhere, mean / min (dB) | judge monotone | arcface monotone | judge evenness (median) "
             "| pixel evenness (median) | latent length |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, s in summary.items():
        lines.append(f"| {kind} | {s['manifold_36_all']}/{n} | {s['manifold_36_arc']}/{n} | "
                     f"{s['manifold_36_pixel_dial']}/{n} | {s['manifold_min_mean']:.1f} / "
                     f"{s['manifold_min_lowest']:.1f} | {s['judge_monotone']}/{n} | {s['arcface_monotone']}/{n} | "
                     f"{s['judge_evenness_median']:.2f} | {s['pixel_evenness_median']:.2f} | {s['length_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-identity", type=int, default=100_600)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/dial_staging")
    args = ap.parse_args()

    import torch

    from legato_core import faceworld
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.identity.model import load_identity_model
    from legato_core.ranges import validation_ids_or_exit
    from legato_core.unlearning.engine import ForgetConfig
    from legato_core.unlearning.paths import PATHS, arc_lengths, polyline_at, waypoints
    from legato_core.unlearning.targets import make_target

    ids = validation_ids_or_exit(args.first_identity, args.count)
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained()
    judge, arcface = load_identity_model("judge"), backend.loss_identity_model()
    cfg = ForgetConfig().target
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.partial.json"  # each person as they finish: a rerun resumes after the last one kept
    people = [p for p in json.loads(partial.read_text())["people"] if p["identity"] in ids] if partial.exists() else []
    for i in ids:
        if any(p["identity"] == i for p in people):
            continue
        photo = faceworld.render([i], 0)
        w_u, _ = backend.invert(photo)
        w_s, desc = make_target(backend, w_u, cfg)
        paths = {}
        for kind in PATHS:
            points = waypoints(backend, w_u[0], w_s[0], kind, desc)
            lat = polyline_at(points, torch.linspace(0, 1, POINTS))  # equal latent arc length
            paths[kind] = {**score_path(backend, judge, arcface, lat), "length": round(arc_lengths(points), 3),
                           "waypoints": len(points)}
        people.append({"identity": i, "pool_index": desc["pool_index"][0], "paths": paths})
        partial.write_text(json.dumps({"people": people}))
        print(f"{i}: " + ", ".join(f"{k} {p['manifold_db_min']:.1f} dB{'' if p['judge_monotone'] else ' (up)'}"
                                    for k, p in paths.items()), flush=True)
    command = "python scripts/dial_path_staging.py " + " ".join(sys.argv[1:])
    summary = summarise(people)
    (out / "results.json").write_text(json.dumps({"made_by": command, "summary": summary, "people": people}))
    (out / "results.md").write_text(markdown(summary, len(people), command))
    partial.unlink()
    print(markdown(summary, len(people), command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
