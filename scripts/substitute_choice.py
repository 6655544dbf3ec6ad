"""Which of the qualifying substitutes makes the most even dial for the judge, and can arcface tell? Validation ids.

    python scripts/substitute_choice.py --first-identity 100600 --count 60 --out docs/substitute_choice

For each validation person (view-0 photo, inverted as the CLI does) the ``CANDIDATES`` nearest prior faces that
qualify as a substitute (arcface ≤ the ceiling, face centre changed enough) are each drawn along the straight latent
path (33 points, 8 canonical views) and read by the judge, by arcface and by the face encoder; the path's lowest
on-manifold PSNR at 1/4, 1/2, 3/4 is measured too. Then rules that read only what the engine may read (arcface,
the encoder, pixels, the manifold) choose one candidate per person, and the judge scores a dial paced by arcface
(``scripts/dial_evenness_bound.py``) on the chosen path; beside them, the judge's own best choice (an oracle).
Resumes from ``people.jsonl`` in ``--out``. About 27 s per person on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads

CANDIDATES = 8
POWER, FLOOR = 1.5, 0.0  # the best arcface pace of scripts/dial_evenness_bound.py


def draw(backend, judge, arcface, person: int) -> dict:
    """The person's candidates, nearest first, each with its three curves and its path's on-manifold PSNR."""
    from dial_path_monotonicity import path_curves

    from legato_core import faceworld
    from legato_core.unlearning.engine import ForgetConfig
    from legato_core.unlearning.targets import path_quality, qualifying_substitutes

    w_u, _ = backend.invert(faceworld.render([person], 0))
    pool, sim, near = qualifying_substitutes(backend, w_u, ForgetConfig().target)
    dist = (pool - w_u[0]).norm(dim=1)
    out = []
    for j in near[0][:CANDIDATES].tolist():
        jc, ac, per_view, ec = path_curves(backend, judge, arcface, w_u, pool[j:j + 1])
        db, _ = path_quality(backend, w_u[0], pool[j], (0.25, 0.5, 0.75), backend.canonical_views(4))
        out.append({"pool_index": j, "distance": float(dist[j]), "arc_sim": float(sim[0, j]), "judge": jc,
                    "arcface": ac, "arc_views_monotone": per_view, "encoder": ec, "manifold_db": db})
    return {"identity": person, "candidates": out}


def judge_dial(c: dict) -> tuple[float, bool, float]:
    """The judge's evenness, monotone and end on a 17-position dial paced by arcface along candidate ``c``."""
    from dial_evenness_bound import judge_on_dial, pace_of

    from legato_core.metrics import evenness, is_monotone

    j = judge_on_dial(pace_of(c["arcface"], POWER, FLOOR), np.asarray(c["judge"]))
    return evenness(j), is_monotone(list(j)), float(j[-1])


def _raw_evenness(curve) -> float:
    from legato_core.metrics import evenness

    return evenness(np.interp(np.linspace(0, 1, 17), np.linspace(0, 1, len(curve)), curve))


def _least(candidates: list[dict], key) -> int:
    return int(np.argmin([key(c) for c in candidates]))


RULES = {  # name -> the index of the candidate it takes (each reads no judge, except the oracle)
    "the nearest (the substitute to session 27)": lambda cs: 0,
    "arcface's own curve most even along the path": lambda cs: _least(cs, lambda c: _raw_evenness(c["arcface"])),
    "the encoder's curve most even along the path": lambda cs: _least(cs, lambda c: _raw_evenness(c["encoder"])),
    "arcface lowest at the end": lambda cs: _least(cs, lambda c: c["arcface"][-1]),
    "the path best on the manifold": lambda cs: _least(cs, lambda c: -c["manifold_db"]),
    "the judge's most even (an oracle, never used)": lambda cs: _least(cs, lambda c: judge_dial(c)[0]),
}


def table(people: list[dict]) -> tuple[list[dict], dict]:
    from scipy.stats import spearmanr

    rows = []
    for name, rule in RULES.items():
        picks = [p["candidates"][rule(p["candidates"])] for p in people if p["candidates"]]
        scored = [judge_dial(c) for c in picks]
        ev = np.array([s[0] for s in scored])
        rows.append({"rule": name, "people": len(picks), "le_1_5": int((ev <= 1.5).sum()),
                     "le_2_0": int((ev <= 2.0).sum()), "median": float(np.median(ev)),
                     "monotone": sum(s[1] for s in scored), "judge_end_mean": float(np.mean([s[2] for s in scored])),
                     "manifold_ge_36": sum(c["manifold_db"] >= 36 for c in picks)})
    corr = {}  # within each person, how each reading's ranking of the candidates follows the judge's evenness
    readings = (("arcface's own evenness", lambda c: _raw_evenness(c["arcface"])),
                ("the encoder's own evenness", lambda c: _raw_evenness(c["encoder"])),
                ("latent distance", lambda c: c["distance"]), ("path on-manifold PSNR", lambda c: c["manifold_db"]))
    for name, reading in readings:
        rs = [spearmanr([reading(c) for c in p["candidates"]],
                        [judge_dial(c)[0] for c in p["candidates"]]).correlation
              for p in people if len(p["candidates"]) > 2]
        corr[name] = float(np.nanmean(rs))
    return rows, corr


def markdown(rows: list[dict], corr: dict, command: str) -> str:
    n = rows[0]["people"]
    lines = [f"`{command}`", "", f"{n} validation people, each with the {CANDIDATES} nearest qualifying substitutes; "
             f"the judge's curve on a 17-position dial paced by arcface (1 − cos^{POWER:g}, floored at {FLOOR:g}) "
             "along the straight path to the substitute each rule takes:", "",
             "| rule | judge evenness ≤ 1.5 | ≤ 2.0 | median | monotone | judge at the end "
             "| path on-manifold ≥ 36 dB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rule']} | {r['le_1_5']}/{n} | {r['le_2_0']}/{n} | {r['median']:.2f} | {r['monotone']}/{n} "
              f"| {r['judge_end_mean']:+.3f} | {r['manifold_ge_36']}/{n} |" for r in rows]
    lines += ["", "Within each person, the rank correlation (Spearman, mean over people) of each reading with the "
              "judge's evenness over the candidates:", "", "| reading | correlation |", "|---|---|"]
    lines += [f"| {k} | {v:+.2f} |" for k, v in corr.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-identity", type=int, default=100_600)
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/substitute_choice")
    args = ap.parse_args()
    from legato_core.ranges import validation_ids_or_exit

    ids = validation_ids_or_exit(args.first_identity, args.count)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "people.jsonl"
    done = {}
    if partial.exists():
        done = {r["identity"]: r for r in map(json.loads, partial.read_text().splitlines())}
    if any(i not in done for i in ids):
        import torch

        from legato_core.backends.embedded import EmbeddedFaceBackend
        from legato_core.identity.model import load_identity_model

        torch.set_num_threads(args.threads)
        backend = EmbeddedFaceBackend.from_pretrained()
        judge, arcface = load_identity_model("judge"), backend.loss_identity_model()
        for i in ids:
            if i not in done:
                done[i] = draw(backend, judge, arcface, i)
                partial.write_text("".join(json.dumps(done[k]) + "\n" for k in sorted(done)))
                print(i, flush=True)
    rows, corr = table([done[i] for i in ids])
    text = markdown(rows, corr, "python scripts/substitute_choice.py " + " ".join(sys.argv[1:]))
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
