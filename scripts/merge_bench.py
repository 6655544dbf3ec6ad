"""Merge benchmark runs over disjoint targets or disjoint methods (e.g. two 1-thread halves side by side).

    python scripts/merge_bench.py runs/bench-a runs/bench-b --out docs/benchmark

Each input is a `python -m legato_core bench ... --out DIR` folder with the same config and learning rates, and
either the same methods (over disjoint targets) or the same targets (with disjoint methods); the output is what
one run over all of them would have written.

    python scripts/merge_bench.py runs/bench-legato runs/bench-old:guide,salun --ignore-config target.search_extend \
        --out docs/benchmark

``DIR:m1,m2`` takes only those methods of a run (rows of methods a later change did not touch);
``--ignore-config KEY`` (a dotted config key, repeatable) lets runs differ there, and the merged results record
each run's value under ``config_differences``: say in the write-up why the difference does not touch the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.baselines.benchmark import summarise, write_outputs  # noqa: E402


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def select(bench: dict, methods: list[str]) -> dict:
    """Only ``methods`` of a run (its targets and everything else as they were)."""
    missing = sorted(set(methods) - set(bench["methods"]))
    if missing:
        raise SystemExit(f"cannot select {missing}: the run has {bench['methods']}")
    return {**bench, "methods": [m for m in bench["methods"] if m in methods],
            "results": [r for r in bench["results"] if r["method"] in methods]}


def merge(parts: list[dict], ignore: tuple[str, ...] = ()) -> dict:
    first = parts[0]
    full = [_flat(p["config"]) for p in parts]
    flat = [{k: v for k, v in f.items() if k not in ignore} for f in full]
    for p, f in zip(parts[1:], flat[1:], strict=True):
        if f != flat[0]:
            keys = sorted(k for k in set(f) | set(flat[0]) if f.get(k) != flat[0].get(k))
            raise SystemExit(f"cannot merge: runs differ in 'config' ({', '.join(keys)})")
        for key in ("lrs", "threshold"):
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
        key = "base_model_attacks" if all("base_model_attacks" in p for p in parts) else "base_model_reinversion"
        merged[key] = [a for p in parts for a in p.get(key, [])]
    elif same_targets and len({m for p in parts for m in p["methods"]}) == sum(len(p["methods"]) for p in parts):
        merged["methods"] = [m for p in parts for m in p["methods"]]
    else:
        raise SystemExit("cannot merge: runs must share methods over disjoint targets, "
                         "or targets with disjoint methods")
    merged["results"] = [r for p in parts for r in p["results"]]
    merged["seconds"] = max(p.get("seconds", 0) for p in parts)
    merged["command"] = [c for p in parts for c in (p["command"] if isinstance(p.get("command"), list)
                                                    else [p.get("command")])]
    merged["merged_from"] = len(parts)
    if ignore:
        merged["config_differences"] = {k: [f.get(k) for f in full] for k in ignore}
    if sites:
        merged["legato_sites"] = list(next(iter(sites)))
    return merged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", help="bench output folders, each optionally DIR:method,method")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ignore-config", action="append", default=[], metavar="KEY")
    args = ap.parse_args()
    parts = []
    for spec in args.runs:
        folder, _, methods = spec.partition(":")
        bench = json.loads((Path(folder) / "results.json").read_text())
        parts.append(select(bench, methods.split(",")) if methods else bench)
    bench = merge(parts, tuple(args.ignore_config))
    paths = write_outputs(bench, args.out)
    print(summarise(bench))
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
