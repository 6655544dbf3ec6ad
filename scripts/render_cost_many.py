"""What drawing costs with k people forgotten: the table in docs/many.md ("Render cost").

    python scripts/render_cost_many.py [--k 1,10,100] [--repeats 40] [--people runs/many/people.safetensors]

Adapters of the engine's shape (hidden 64 on the identity latent "w") with random weights: the cost does not
depend on what they learned. Each gets a scope around one evaluation person: their upload's latent and the latents
of their 5 other photos as centres (``bench-many`` caches them in its work folder). A batch of 8 faces (4 of the
forgotten people, 4 prior people) is drawn with the base, one adapter, the k adapters routed (``RequestLog``), the
k adapters in a plain composition, and the k adapters without scopes. Median milliseconds over ``--repeats``.
"""

from __future__ import annotations

import argparse
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
from safetensors.torch import load_file  # noqa: E402

from legato_core.adapters import ODEAdapter, active  # noqa: E402
from legato_core.adapters.request_log import RequestLog  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.unlearning.engine import ForgetConfig, make_scope  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", default="1,10,100")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--people", type=Path, default=ROOT / "runs" / "many" / "people.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained(None)
    people = load_file(str(args.people))
    ks = [int(k) for k in args.k.split(",")]
    if max(ks) > len(people["w"]):
        raise SystemExit(f"{args.people} holds {len(people['w'])} people; --k asks for {max(ks)}")
    cfg = ForgetConfig()
    g = torch.Generator().manual_seed(0)
    adapters = []
    for i in range(max(ks)):
        a = ODEAdapter.for_model(backend, ["w"], cfg.ode)
        with torch.no_grad():
            for p in a.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        a.set_scope(make_scope(backend, torch.cat([people["w"][i:i + 1], people["ow"][i]]), cfg.scope))
        adapters.append(a)
    batch = torch.cat([people["w"][:4], backend.sample_latents(4, torch.Generator().manual_seed(1))])
    views = backend.canonical_views(len(batch))

    def medians(contexts: list) -> list[float]:
        """Median ms of each context, measured round-robin so that a busy machine slows all of them alike."""
        times: list[list[float]] = [[] for _ in contexts]
        for _ in range(args.repeats):
            for i, context in enumerate(contexts):
                with torch.no_grad(), context():
                    t0 = time.perf_counter()
                    backend.render(batch, views)
                    times[i].append(time.perf_counter() - t0)
        return [1000 * statistics.median(ts) for ts in times]

    t = cfg.ode.t_max
    print(f"threads {args.threads}, {args.repeats} repeats, round-robin, a batch of 8 faces (ms, median)")
    print("| k | base | one adapter | routed (RequestLog) | ÷ one | plain composition | ÷ one | unscoped | ÷ one |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in ks:
        log = RequestLog.for_model(backend)
        for a in adapters[:k]:
            log.add(a)
        free = []
        for a in adapters[:k]:
            b = ODEAdapter.for_model(backend, ["w"], cfg.ode)
            b.load_state_dict(a.state_dict())
            free.append((b, t))
        base, one, routed, plain, unscoped = medians([
            lambda: active(backend, []), lambda: active(backend, [(adapters[0], t)]),
            lambda lg=log: lg.active(backend), lambda lg=log: active(backend, lg.activations()),
            lambda f=free: active(backend, f)])
        print(f"| {k} | {base:.1f} | {one:.1f} | {routed:.1f} | {routed / one:.2f} | {plain:.1f} | {plain / one:.2f} | "
              f"{unscoped:.1f} | {unscoped / one:.2f} |")


if __name__ == "__main__":
    main()
