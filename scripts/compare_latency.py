"""Slider and engine latency of two commits, measured side by side in one run.

A refactor should not make the demo slower; timing the two commits on different days measures the machine, not
the code. This script checks both commits out into temporary git worktrees and measures them alternately
(old, new, old, new, ...) in fresh processes, through the Studio and engine APIs that both share:

- slider: a studio adds face-world id 200,003, forgets it with 30 steps, then renders the slider's rows
  (1 target x 3 views plus the retained row) uncached at 30 intensities from 0.05 to 1.55;
- engine: ``train_adapter`` with ``ForgetConfig(steps=30, seed=s)`` on the inversion of face-world id 200,005.

Run it on a quiet machine (stop any background training first) with two threads:

    python scripts/compare_latency.py --old d350055 --new HEAD --rounds 3 --out docs/redesign_latency.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(label: str, engine_runs: int) -> dict:
    """One process's figures for the checkout it runs in (the current directory)."""
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from legato_core import faceworld
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.studio import JobQueue, Resources, Studio
    from legato_core.unlearning import ForgetConfig, train_adapter

    studio = Studio(Resources(), JobQueue(1), curve_views=2, slider_step=None)
    entry = studio.add_identity(200_003)
    studio.start_forget(entry.key, steps=30)
    status = studio.wait(900)
    if status.state != "done":
        raise RuntimeError(status.text())
    slider_ms = []
    for t in np.linspace(0.05, 1.55, 30):
        studio._cache.clear()  # every position uncached: the render itself is what is timed
        start = time.perf_counter()
        studio.render_rows(entry.key, float(t))
        slider_ms.append((time.perf_counter() - start) * 1000)
    studio.close()
    backend = EmbeddedFaceBackend.from_pretrained()
    w, _ = backend.invert(faceworld.render([200_005], 0))
    engine_s = []
    for seed in range(engine_runs):
        start = time.perf_counter()
        train_adapter(backend, w, ForgetConfig(steps=30, seed=seed))
        engine_s.append(time.perf_counter() - start)
    return {"label": label, "slider_ms": slider_ms, "engine_s": engine_s}


def _worktree(ref: str, root: Path) -> tuple[Path, str]:
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.strip()
    path = root / sha
    subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=REPO, check=True,
                   capture_output=True)
    return path, sha


def _run_one(checkout: Path, label: str, engine_runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", label,
                          "--engine-runs", str(engine_runs)], cwd=checkout, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _summary(runs: list[dict]) -> dict:
    slider = [x for r in runs for x in r["slider_ms"]]
    engine = [x for r in runs for x in r["engine_s"]]
    slider.sort()
    return {"slider_median_ms": statistics.median(slider), "slider_p90_ms": slider[int(0.9 * (len(slider) - 1))],
            "engine_median_s": statistics.median(engine), "engine_min_s": min(engine), "engine_max_s": max(engine),
            "engine_runs": len(engine), "slider_renders": len(slider),
            "per_round_engine_median_s": [round(statistics.median(r["engine_s"]), 2) for r in runs],
            "per_round_slider_median_ms": [round(statistics.median(r["slider_ms"]), 1) for r in runs]}


def _markdown(old: str, new: str, summaries: dict[str, dict], rounds: int, seconds: float) -> str:
    o, n = summaries[old], summaries[new]
    rows = [
        ("slider render, median (ms)", "slider_median_ms", ".1f"),
        ("slider render, p90 (ms)", "slider_p90_ms", ".1f"),
        ("engine, 30 steps, median (s)", "engine_median_s", ".2f"),
        ("engine, 30 steps, fastest (s)", "engine_min_s", ".2f"),
        ("engine, 30 steps, slowest (s)", "engine_max_s", ".2f"),
    ]
    lines = [
        f"# Slider and engine latency, {old} vs {new}, side by side",
        "",
        f"Made by `python scripts/compare_latency.py --old {old} --new {new} --rounds {rounds}` "
        f"({seconds / 60:.0f} min; 2 threads; the two commits alternate, each round a fresh process per commit).",
        "",
        f"| measure | {old} | {new} | new ÷ old |",
        "|---|---|---|---|",
    ]
    for name, key, fmt in rows:
        lines.append(f"| {name} | {o[key]:{fmt}} | {n[key]:{fmt}} | {n[key] / o[key]:.2f} |")
    lines += [
        "",
        f"Per round, engine median (s): {old} {o['per_round_engine_median_s']}, "
        f"{new} {n['per_round_engine_median_s']}; slider median (ms): {old} {o['per_round_slider_median_ms']}, "
        f"{new} {n['per_round_slider_median_ms']}.",
        f"Samples per commit: {o['slider_renders']} slider renders, {o['engine_runs']} engine runs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default="d350055")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine-runs", type=int, default=3, help="engine runs per process")
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure the current checkout
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.engine_runs)))
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="legato-latency-") as tmp:
        trees = [_worktree(ref, Path(tmp)) for ref in (args.old, args.new)]
        try:
            runs: dict[str, list[dict]] = {sha: [] for _, sha in trees}
            for r in range(args.rounds):
                for path, sha in (trees if r % 2 == 0 else trees[::-1]):
                    result = _run_one(path, sha, args.engine_runs)
                    runs[sha].append(result)
                    print(f"round {r + 1} {sha}: slider median {statistics.median(result['slider_ms']):.1f} ms, "
                          f"engine {[round(x, 2) for x in result['engine_s']]} s", flush=True)
        finally:
            for path, _ in trees:
                subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False)
    summaries = {sha: _summary(rs) for sha, rs in runs.items()}
    text = _markdown(trees[0][1], trees[1][1], summaries, args.rounds, time.perf_counter() - start)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
