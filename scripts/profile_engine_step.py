"""Where an engine training step's time goes on the embedded default: one step split into its parts.

    python scripts/profile_engine_step.py [--threads 1] [--steps 12] [--sites b8,b16,b32,b64] [--identity 100601]

Parts, timed on each step after two warm-up steps (medians, ms): the frozen renders of the targets (no
gradients), the adapted render (the adapter's ODE at every site, with gradients), the losses (arcface features of
the renders and the targets), the backward pass; then the adapter's vector fields alone, forward and backward,
per site, on feature maps of the sizes a step feeds them. The adapter starts small and random (not zero), as it
is mid-run. Validation ids only: this is a tuning tool.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import torch  # noqa: E402
# isort: on
from legato_core import faceworld  # noqa: E402
from legato_core.adapters import ODEAdapter, active  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.ranges import EVALUATION_START  # noqa: E402
from legato_core.unlearning.engine import ForgetConfig  # noqa: E402
from legato_core.unlearning.objectives import ImageLoss, trajectory_consistency  # noqa: E402
from legato_core.unlearning.step_objectives import sample_step, step_losses  # noqa: E402
from legato_core.unlearning.targets import make_target, typical_radius  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--sites", help="comma-separated adapter sites (default: the backend's forget_sites)")
    ap.add_argument("--identity", type=int, default=100_601)
    ap.add_argument("--model-path", help="an embedded generator directory (default: the shipped one)")
    args = ap.parse_args()
    if args.identity >= EVALUATION_START:
        raise SystemExit(f"profile on validation ids, not evaluation ids (>= {EVALUATION_START:,})")
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained(args.model_path)
    cfg = ForgetConfig()
    sites = args.sites.split(",") if args.sites else cfg.sites_on(backend)
    w, _ = backend.invert(faceworld.render([args.identity], 0))
    gen = torch.Generator().manual_seed(0)
    w_target, _ = make_target(backend, w, cfg.target)
    adapter = ODEAdapter.for_model(backend, sites, cfg.ode)
    torch.manual_seed(0)
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.02)
    loss_fn = ImageLoss(backend.loss_identity_model(), cfg.weights)
    radius = cfg.adjacency_radius * typical_radius(backend)
    parts: dict[str, list[float]] = {k: [] for k in ("frozen_render", "adapted_render", "losses", "backward", "step")}
    feature_maps: dict[str, torch.Tensor] = {}
    for step in range(args.steps + 2):
        batch = sample_step(backend, w, w_target, cfg, gen, radius)
        t0 = time.perf_counter()
        with torch.no_grad(), active(backend, []):
            ref_img, ref_feat = backend.synthesize(batch.dst, batch.views, return_features=True)
        t1 = time.perf_counter()
        with active(backend, [(adapter, cfg.ode.t_end)], record=True) as states, \
                torch.autograd.set_multithreading_enabled(False):
            img, feat = backend.synthesize(batch.src, batch.views, return_features=True)
            t2 = time.perf_counter()
            losses = step_losses(loss_fn, batch, img, feat, ref_img, ref_feat)
            traj = torch.stack([trajectory_consistency([s[:batch.k_l] for s in states[n]]) for n in sites]).mean()
            total = losses["forget"] + losses["retain"] + cfg.weights.trajectory * traj
            t3 = time.perf_counter()
            total.backward()
        t4 = time.perf_counter()
        adapter.zero_grad(set_to_none=True)
        feature_maps = {n: states[n][0].detach() for n in sites}
        if step >= 2:
            for key, a, b in (("frozen_render", t0, t1), ("adapted_render", t1, t2), ("losses", t2, t3),
                              ("backward", t3, t4), ("step", t0, t4)):
                parts[key].append(1000 * (b - a))
    fields = {}
    for name in sites:  # the vector field alone: the ODE's steps at this site, forward and backward
        x0, times = feature_maps[name], []
        for _ in range(args.steps):
            x = x0.clone().requires_grad_(True)
            t0 = time.perf_counter()
            out = adapter.transform(name, x, cfg.ode.t_end)
            out.square().mean().backward()
            times.append(1000 * (time.perf_counter() - t0))
        adapter.zero_grad(set_to_none=True)
        fields[name] = round(statistics.median(times), 1)
    print(json.dumps({"threads": args.threads, "sites": sites, "batch": len(batch.src),
                      "ms": {k: round(statistics.median(v), 1) for k, v in parts.items()},
                      "vector_field_ms_per_site": fields}, indent=2))


if __name__ == "__main__":
    main()
