"""Choose robust mode's gate threshold on validation ids: attacks a-d and what the gate costs everyone else.

    python scripts/tune_robust_gate.py --ids 100600-100605 --configs 'q99={"quantile":0.99}' \
        'q999={"quantile":0.999}' --out docs/attacks_robust/validation.json

For each validation id, one adapter is trained with the default ForgetConfig (cached in --work) and given each
candidate gate (``RobustConfig`` fields as JSON; the gate is set after training and changes no weight, so the
candidates share the fields). Per candidate: attacks (a)-(d) on the unlearned model at full intensity (200 steps,
5 unseen views; judge-scored), judge retention of 64 random identities in 2 canonical views and how many of them
the gate holds, and the judge's retention of the target's 5 nearest look-alikes among 512 random identities.
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


def id_range(text: str) -> list[int]:
    if "-" in text:
        a, b = (int(x) for x in text.split("-"))
        return list(range(a, b + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", default="100600-100605")
    ap.add_argument("--configs", nargs="+", default=['q99={"quantile":0.99}', 'q999={"quantile":0.999}'])
    ap.add_argument("--work", default="runs/robust_gate", help="the trained adapters (reused when present)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/attacks_robust/validation.json")
    args = ap.parse_args(argv)
    import torch

    from legato_core import faceworld
    from legato_core.adapters import ODEAdapter, active
    from legato_core.attacks import AttackConfig, attack_model
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.identity.model import load_identity_model
    from legato_core.ranges import EVALUATION_START
    from legato_core.unlearning.anchors import person_latents
    from legato_core.unlearning.engine import ForgetConfig, train_adapter
    from legato_core.unlearning.robust import RobustConfig, make_gate

    ids = id_range(args.ids)
    if max(ids) >= EVALUATION_START:
        raise SystemExit(f"tune on validation ids, below {EVALUATION_START:,}")
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained()
    judge = load_identity_model("judge")
    configs = {name: RobustConfig(**json.loads(text)) for name, text in (c.split("=", 1) for c in args.configs)}
    views = backend.canonical_views(2)
    others = backend.sample_latents(64, torch.Generator().manual_seed(4242))
    pool = backend.sample_latents(512, torch.Generator().manual_seed(777))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    def embed(latents):
        with torch.no_grad():
            images = backend.render(latents.repeat_interleave(len(views), 0), views.repeat(len(latents), 1))
            return judge.embed(images).view(len(latents), len(views), -1)

    rows = []
    for pid in ids:
        path = work / f"{pid}.safetensors"
        photo = faceworld.render([pid], 0)
        w, v = backend.invert(photo)
        if not path.exists():
            train_adapter(backend, w, ForgetConfig()).adapter.save(path)
        adapter = ODEAdapter.load(path, backend)
        w_u = person_latents(backend, w, ForgetConfig().view_anchors, 0)
        unseen = faceworld.render([pid] * 5, list(range(1, 6)))
        with torch.no_grad():
            e_photo = judge.embed(photo)[0]
        pool_e = torch.nn.functional.normalize(embed(pool).mean(1), dim=1)
        look = (pool_e @ e_photo).topk(5).indices
        for name, config in configs.items():
            gate, info = make_gate(backend, w_u, config)
            adapter.set_gate(gate)
            t = adapter.config.t_max
            with active(backend, [(adapter, t)]):
                attacks = attack_model(backend, photo, (w, v), judge, unseen, AttackConfig(steps=200))
            base_o, base_l = embed(others), embed(pool[look])
            with active(backend, [(adapter, t)]):
                ad_o, ad_l = embed(others), embed(pool[look])
            retention = (base_o * ad_o).sum(-1).mean(1)
            row = {"id": pid, "config": name, "gate": info, "attacks": {k: max(x) for k, x in attacks.items()},
                   "retention_mean": retention.mean().item(), "retention_p5": retention.quantile(0.05).item(),
                   "others_held": int(gate.holds(backend.latent_identity(others, gate.views)).sum()),
                   "lookalike_retention": (base_l * ad_l).sum(-1).mean(1).tolist()}
            rows.append(row)
            print(name, pid, f"threshold {info['threshold']:.3f}",
                  {k: round(x, 3) for k, x in row["attacks"].items()}, flush=True)
    summary = {}
    for name in configs:
        mine = [r for r in rows if r["config"] == name]
        summary[name] = {
            "config": configs[name].__dict__,
            "held": {a: sum(r["attacks"][a] < judge.threshold for r in mine) for a in mine[0]["attacks"]},
            "of": len(mine), "worst_attack": max(max(r["attacks"].values()) for r in mine),
            "retention_mean": statistics.mean(r["retention_mean"] for r in mine),
            "others_held": sum(r["others_held"] for r in mine), "others": 64 * len(mine),
            "lookalikes_lost": sum(x < judge.threshold for r in mine for x in r["lookalike_retention"]),
            "lookalikes": 5 * len(mine)}
    command = "python scripts/tune_robust_gate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": command, "threshold": judge.threshold, "summary": summary,
                                          "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
