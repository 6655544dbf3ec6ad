"""What robust forgetting costs the people who look most like the target: its nearest face-world neighbours.

    python scripts/evaluate_lookalikes.py --adapters docs/engine_reports_robust --targets 10 \
        --first-identity 1000000 --out docs/attacks_robust/lookalikes.json

For each target, the 5 prior identities (of a seeded pool of 512 random ones) that the judge finds most like the
target's photo are drawn by the base model and by the target's adapter at full intensity, in 4 canonical views.
Per look-alike: the judge's similarity to its own original and the PSNR. Every adapter is measured twice, with
its identity gate (robust mode) and with the gate removed (the same fields: the default mode's adapter, since the
gate is set after training and changes no weight), so the table isolates what the gate costs. The gate's
threshold and the share of 64 other random identities it holds are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads

POOL, LOOKALIKES, VIEWS, OTHERS = 512, 5, 4, 64


def measure(backend, judge, adapter, photo, pool, views, others) -> dict:
    import torch

    from legato_core.adapters import active

    def renders(latents, t=None):
        lat, vw = latents.repeat_interleave(len(views), 0), views.repeat(len(latents), 1)
        with torch.no_grad(), active(backend, [] if t is None else [(adapter, t)]):
            return backend.render(lat, vw)

    def embed(images):
        with torch.no_grad():
            return judge.embed(images).view(-1, len(views), judge.embed(images[:1]).shape[1])

    with torch.no_grad():
        e_photo = judge.embed(photo)[0]
    pool_e = torch.nn.functional.normalize(embed(renders(pool)).mean(1), dim=1)
    like = (pool_e @ e_photo).topk(LOOKALIKES)
    t = adapter.config.t_max
    rows = []
    gate = adapter.gate
    for mode in ("robust", "gate removed"):
        adapter.set_gate(gate if mode == "robust" else None)
        base, adapted = renders(pool[like.indices]), renders(pool[like.indices], t)
        sim = (embed(base) * embed(adapted)).sum(-1).mean(1)
        mse = ((base - adapted) ** 2).flatten(1).mean(1).clamp_min(1e-10).view(LOOKALIKES, len(views)).mean(1)
        psnr = (-10 * torch.log10(mse)).clamp(max=100)
        rows.append({"mode": mode, "judge_to_own_original": sim.tolist(), "psnr_db": psnr.tolist()})
    adapter.set_gate(gate)
    held = gate.holds(backend.latent_identity(others, gate.views)) if gate is not None else None
    return {"judge_to_target": like.values.tolist(), "modes": rows,
            "gate_threshold": None if gate is None else gate.threshold,
            "others_held": None if held is None else int(held.sum()), "others": len(others)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", default="docs/engine_reports_robust")
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--first-identity", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/attacks_robust/lookalikes.json")
    args = ap.parse_args(argv)
    import torch

    from legato_core import faceworld
    from legato_core.adapters import ODEAdapter
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.identity.model import load_identity_model

    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained()
    judge = load_identity_model("judge")
    pool = backend.sample_latents(POOL, torch.Generator().manual_seed(777))
    others = backend.sample_latents(OTHERS, torch.Generator().manual_seed(4242))
    views = backend.canonical_views(VIEWS)
    per_target = {}
    for identity in range(args.first_identity, args.first_identity + args.targets):
        adapter = ODEAdapter.load(Path(args.adapters) / f"{identity}.safetensors", backend)
        per_target[str(identity)] = measure(backend, judge, adapter, faceworld.render([identity], 0), pool, views,
                                            others)
        r = per_target[str(identity)]["modes"]
        print(identity, {m["mode"]: (round(min(m["judge_to_own_original"]), 3), round(min(m["psnr_db"]), 1))
                         for m in r}, flush=True)
    summary = {}
    for i, mode in enumerate(("robust", "gate removed")):
        sims = [s for r in per_target.values() for s in r["modes"][i]["judge_to_own_original"]]
        psnr = [p for r in per_target.values() for p in r["modes"][i]["psnr_db"]]
        summary[mode] = {"judge_to_own_original_mean": statistics.mean(sims),
                         "judge_to_own_original_min": min(sims),
                         "below_threshold": sum(s < judge.threshold for s in sims), "of": len(sims),
                         "psnr_db_mean": statistics.mean(psnr), "psnr_db_min": min(psnr)}
    held = [r["others_held"] for r in per_target.values() if r["others_held"] is not None]
    summary["others_held_per_target"] = held
    command = "python scripts/evaluate_lookalikes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"command": command, "threshold": judge.threshold, "pool": POOL, "views": VIEWS, "summary": summary,
           "per_target": per_target}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
