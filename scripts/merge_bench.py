"""Merge benchmark runs over disjoint targets or disjoint methods (e.g. two 1-thread halves side by side).

    python scripts/merge_bench.py runs/bench-a runs/bench-b --out docs/benchmark

Each input is a `python -m legato_core bench ... --out DIR` folder with the same config and learning rates, and
either the same methods (over disjoint targets) or the same targets (with disjoint methods); the output is what
one run over all of them would have written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.baselines.benchmark import summarise, write_outputs  # noqa: E402


def merge(parts: list[dict]) -> dict:
    first = parts[0]
    for p in parts[1:]:
        for key in ("config", "lrs", "threshold"):
            if p[key] != first[key]:
                raise SystemExit(f"cannot merge: runs differ in {key!r}")
    sites = {tuple(p["legato_sites"]) for p in parts if "legato_sites" in p}  # runs before session 13: not kept
    if len(sites) > 1:
        raise SystemExit(f"cannot merge: runs trained LEGATO adapters on different sites {sorted(sites)}")
    same_methods = all(p["methods"] == first["methods"] for p in parts)
    same_targets = all(p["identities"] == first["identities"] for p in parts)
    merged = dict(first)
    if same_methods and not any(set(p["identities"]) & set(q["identities"])
                                for i, p in enumerate(parts) for q in parts[i + 1:]):
        merged["identities"] = [i for p in parts for i in p["identities"]]
        merged["base_model_reinversion"] = [a for p in parts for a in p["base_model_reinversion"]]
    elif same_targets and len({m for p in parts for m in p["methods"]}) == sum(len(p["methods"]) for p in parts):
        merged["methods"] = [m for p in parts for m in p["methods"]]
    else:
        raise SystemExit("cannot merge: runs must share methods over disjoint targets, "
                         "or targets with disjoint methods")
    merged["results"] = [r for p in parts for r in p["results"]]
    merged["seconds"] = max(p.get("seconds", 0) for p in parts)
    merged["command"] = [p.get("command") for p in parts]
    merged["merged_from"] = len(parts)
    if sites:
        merged["legato_sites"] = list(next(iter(sites)))
    return merged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    bench = merge([json.loads((d / "results.json").read_text()) for d in args.runs])
    paths = write_outputs(bench, args.out)
    print(summarise(bench))
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
