"""Attack saved adapters of evaluation targets and summarise: does the forgotten person come back?

    python scripts/evaluate_attacks.py --adapters docs/engine_reports --targets 10 --first-identity 1000000 \
        --out docs/attacks

For each target it runs ``python -m legato_core attack`` (attacks a-d at u = 1, 200 steps, 5 unseen views) on
``ADAPTERS/<id>.safetensors`` (written by scripts/evaluate_engine.py), keeps ``OUT/<id>.json`` (an existing one is
reused: the run resumes), and writes ``OUT/summary.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK_ORDER = ("reinvert", "unseen_photos", "encoder_guess", "warm_start")


def summarise(reports: dict[int, dict]) -> dict:
    """Per attack: how many targets held (below the judge's threshold) and the mean similarity, unlearned and base."""
    out = {"targets": len(reports), "threshold": next(iter(reports.values()))["threshold"], "attacks": {}}
    for attack in ATTACK_ORDER:
        rows = [r["attacks"][attack] for r in reports.values() if attack in r["attacks"]]
        if not rows:
            continue
        out["attacks"][attack] = {
            "what": rows[0]["what"], "held": sum(r["held"] for r in rows), "of": len(rows),
            "unlearned_mean": statistics.mean(r["unlearned"] for r in rows),
            "unlearned_min": min(r["unlearned"] for r in rows),
            "base_mean": statistics.mean(r["base"] for r in rows)}
    out["per_target"] = {str(i): {a: round(r["attacks"][a]["unlearned"], 3) for a in r["attacks"]}
                         for i, r in reports.items()}
    return out


def markdown(summary: dict, command: str) -> str:
    lines = [f"Command: `{command}`", "",
             f"Judge threshold {summary['threshold']:.3f}; a target holds when the attacker's best render stays "
             "below it.", "",
             "| attack | held | unlearned mean (min) | base mean |", "|---|---|---|---|"]
    for a in summary["attacks"].values():
        lines.append(f"| {a['what']} | {a['held']}/{a['of']} | {a['unlearned_mean']:.3f} ({a['unlearned_min']:.3f}) "
                     f"| {a['base_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", default="docs/engine_reports")
    ap.add_argument("--targets", type=int, default=10)
    ap.add_argument("--first-identity", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="docs/attacks")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    for identity in range(args.first_identity, args.first_identity + args.targets):
        path = out / f"{identity}.json"
        if not path.exists():
            adapter = Path(args.adapters) / f"{identity}.safetensors"
            subprocess.run([sys.executable, "-m", "legato_core", "attack", "--adapter", str(adapter), "--identity",
                            str(identity), "--steps", str(args.steps), "--threads", str(args.threads), "--json",
                            str(path), "--quiet"], check=True, cwd=ROOT)
        reports[identity] = json.loads(path.read_text())
        print(identity, {a: round(r["unlearned"], 3) for a, r in reports[identity]["attacks"].items()}, flush=True)
    summary = summarise(reports)
    command = "python scripts/evaluate_attacks.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary["command"] = command
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(markdown(summary, command))
    print(markdown(summary, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
