"""Merge "many" benchmark runs into one results.json: a later run's record replaces an earlier one with the same
method, mode and k; each record keeps the command that made it in ``made_by``.

    python scripts/merge_many.py docs/many/results.json runs/many_out/results.json --out docs/many
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core.baselines.many_benchmark import write_many_outputs  # noqa: E402


def merge(runs: list[dict]) -> dict:
    records, commands = {}, []
    for run in runs:
        made_by = run.get("command") or " && ".join(run.get("commands", []))
        commands += [c for c in run.get("commands", [run.get("command")]) if c and c not in commands]
        for r in run["records"]:
            records[(r["method"], r["mode"], r["k"])] = {**r, "made_by": r.get("made_by", made_by)}
    return {"config": {"runs": [run["config"] for run in runs]}, "threshold": runs[-1]["threshold"],
            "records": [records[key] for key in sorted(records)], "commands": commands}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="results.json files, earliest first")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    data = merge([json.loads(p.read_text()) for p in args.runs])
    for path in write_many_outputs(data, args.out):
        print("wrote", path)


if __name__ == "__main__":
    main()
