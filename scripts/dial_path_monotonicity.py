"""Is the way to the substitute monotone for the judge? The base model's straight latent path, validation ids.

    python scripts/dial_path_monotonicity.py --first-identity 100600 --count 100 --out docs/dial_paths

The adapters are trained to carry the person along the straight latent path to their substitute (the
trajectory term's references are the base model's renders of that path), so the path says what a dial can be at
best. For each validation person (view-0 photo, inverted as the CLI does) and each substitute ceiling
(``TargetConfig.stop_similarity``), the path is drawn at 33 evenly spaced points in the 8 canonical views and
scored by the judge and by the loss network (arcface): each curve's cosine to the person at the path's start,
and whether it is monotone (never up by more than 0.01, as the dial's bar). Also: whether readings other than the
judge's (arcface in each view, the face encoder's identity guess) flag the paths on which the judge's curve comes
back, and the judge's curve cut where arcface's first reaches a level (the dial ending where arcface calls the face
unrelated, instead of at the substitute). Validation ids only: this chooses defaults.
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

CEILINGS = (-0.1, -0.15, -0.2, -0.25, -0.3)
CUT_LEVELS = (0.2, 0.1, 0.0, -0.1)
POINTS, VIEWS = 33, 8


def path_curves(backend, judge, arcface, w_u, w_target) -> tuple[list[float], list[float], int, list[float]]:
    """The judge's and arcface's mean cosine to the path's start at each point, in how many of the views
    arcface's own curve is monotone, and the face encoder's curve: whether another reading than the judge's could
    flag the judge's bumps."""
    import torch

    from legato_core.metrics import is_monotone

    views = backend.canonical_views(VIEWS)
    fr = torch.linspace(0, 1, POINTS)
    lat = (w_u + fr[:, None] * (w_target - w_u)).repeat_interleave(VIEWS, 0)
    with torch.no_grad():
        img = backend.render(lat, views.repeat(POINTS, 1))
        curves = []
        for net in (judge, arcface):
            e = net.embed(img).view(POINTS, VIEWS, -1)
            curves.append((e * e[:1]).sum(-1))  # (POINTS, VIEWS)
        # a third reader of identity that is neither: the face encoder's guess of the identity latent, as a
        # direction from the average face (trained with the generator, on its own range of people)
        guess = torch.nn.functional.normalize(backend.encode_identity(img) - backend.w_avg, dim=1)
        guess = guess.view(POINTS, VIEWS, -1)
        encoder = (guess * guess[:1]).sum(-1).mean(-1).tolist()
    per_view = sum(is_monotone(curves[1][:, v].tolist()) for v in range(VIEWS))
    return curves[0].mean(-1).tolist(), curves[1].mean(-1).tolist(), per_view, encoder


def summarise(people: list[dict], ceilings: tuple[float, ...] = CEILINGS) -> dict:
    """Per ceiling, and for the default ceiling (the first of ``ceilings``) the other readings and the cuts."""
    from legato_core.metrics import is_monotone

    out = {"people": len(people), "ceilings": {}, "cut_default_ceiling": {}, "default_ceiling": ceilings[0]}
    for c in ceilings:
        rows = [p["paths"][str(c)] for p in people]
        out["ceilings"][str(c)] = {
            "judge_monotone": sum(is_monotone(r["judge"]) for r in rows),
            "arcface_monotone": sum(is_monotone(r["arcface"]) for r in rows),
            "judge_end_mean": statistics.mean(r["judge"][-1] for r in rows),
            "judge_end_max": max(r["judge"][-1] for r in rows),
            "latent_distance_mean": statistics.mean(r["distance"] for r in rows)}
    rows = [p["paths"][str(ceilings[0])] for p in people]
    every_view = [r["arcface_views_monotone"] == VIEWS for r in rows]
    judged = [is_monotone(r["judge"]) for r in rows]
    encoder = [is_monotone(r["encoder"]) for r in rows]
    for name, flags in (("arcface_every_view_monotone", every_view), ("encoder_monotone", encoder)):
        out[name] = {  # does this reading (not the judge's) flag the judge's bumps?
            "judge_monotone": sum(e and j for e, j in zip(flags, judged, strict=True)),
            "judge_not_monotone": sum(e and not j for e, j in zip(flags, judged, strict=True)),
            "of_paths": sum(flags)}
    for level in CUT_LEVELS:
        mono, ends, where = 0, [], []
        for r in rows:
            i = next((j for j, a in enumerate(r["arcface"]) if a <= level), POINTS - 1)
            mono += is_monotone(r["judge"][:i + 1])
            ends.append(r["judge"][i])
            where.append(i / (POINTS - 1))
        out["cut_default_ceiling"][str(level)] = {
            "judge_monotone": mono, "judge_end_mean": statistics.mean(ends), "judge_end_max": max(ends),
            "path_fraction_mean": statistics.mean(where)}
    return out


def markdown(summary: dict, command: str) -> str:
    n = summary["people"]
    lines = [f"`{command}`", "", f"{n} validation people; the straight latent path to the substitute, 33 points, "
             "8 canonical views; monotone = never up by more than 0.01.", "",
             "| substitute ceiling (arcface) | judge monotone | arcface monotone | judge at the substitute, mean / max "
             "| latent distance |", "|---|---|---|---|---|"]
    for c, s in summary["ceilings"].items():
        lines.append(f"| {c} | {s['judge_monotone']}/{n} | {s['arcface_monotone']}/{n} | {s['judge_end_mean']:+.3f} / "
                     f"{s['judge_end_max']:+.3f} | {s['latent_distance_mean']:.2f} |")
    lines += ["", "Paths to the default substitute that another reading calls monotone, and what the judge says of "
              "them:", "", "| reading | monotone paths | judge monotone | judge not |", "|---|---|---|---|"]
    for name, label in (("arcface_every_view_monotone", f"arcface in each of the {VIEWS} views"),
                        ("encoder_monotone", "the face encoder's identity guess (cosine about the average face)")):
        e = summary[name]
        lines.append(f"| {label} | {e['of_paths']}/{n} | {e['judge_monotone']} | {e['judge_not_monotone']} |")
    lines += ["", f"The path to the default substitute (ceiling {summary['default_ceiling']}) cut where arcface first "
              "reaches a level:",
              "", "| cut at arcface ≤ | judge monotone | judge at the cut, mean / max | path fraction |",
              "|---|---|---|---|"]
    for level, s in summary["cut_default_ceiling"].items():
        lines.append(f"| {level} | {s['judge_monotone']}/{n} | {s['judge_end_mean']:+.3f} / {s['judge_end_max']:+.3f} "
                     f"| {s['path_fraction_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-identity", type=int, default=100_600)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/dial_paths")
    ap.add_argument("--ceilings", default=",".join(str(c) for c in CEILINGS),
                    help="substitute ceilings (arcface cosines), comma separated; the first is read as the default")
    args = ap.parse_args()
    ceilings = tuple(float(c) for c in args.ceilings.split(","))

    import torch

    from legato_core import faceworld
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.identity.model import load_identity_model
    from legato_core.ranges import validation_ids_or_exit
    from legato_core.unlearning.engine import ForgetConfig
    from legato_core.unlearning.targets import make_target

    ids = validation_ids_or_exit(args.first_identity, args.count)
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained()
    judge, arcface = load_identity_model("judge"), backend.loss_identity_model()
    target = replace(ForgetConfig().target, path_candidates=0)  # the nearest substitute, as the table says
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    people = []
    for i in ids:
        w_u, _ = backend.invert(faceworld.render([i], 0))
        paths = {}
        for c in ceilings:
            w_t, desc = make_target(backend, w_u, replace(target, stop_similarity=c))
            jc, ac, per_view, ec = path_curves(backend, judge, arcface, w_u, w_t)
            paths[str(c)] = {"judge": [round(x, 4) for x in jc], "arcface": [round(x, 4) for x in ac],
                             "arcface_views_monotone": per_view, "encoder": [round(x, 4) for x in ec],
                             "distance": round(float((w_t - w_u).norm()), 4),
                             "pool_index": desc["pool_index"][0]}
        people.append({"identity": i, "paths": paths})
        print(f"{i}: judge at the default substitute {paths[str(ceilings[0])]['judge'][-1]:+.3f}", flush=True)
    command = "python scripts/dial_path_monotonicity.py " + " ".join(sys.argv[1:])
    summary = summarise(people, ceilings)
    (out / "results.json").write_text(json.dumps({"made_by": command, "summary": summary, "people": people}))
    (out / "results.md").write_text(markdown(summary, command))
    print(markdown(summary, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
