"""Choose an adapter's scope (adapters/scope.py) on *validation* adapters: the table in docs/many.md.

    python scripts/tune_scope.py runs/tune16/P0-*.safetensors

Each adapter file needs its latents beside it (``NAME.pt`` with ``w``, the upload's latent, and ``ow``, five
other photos of the person inverted, as ``SAVE=... scripts/tune_engine.py`` writes them). The scope's centres
are the latents the engine trains as the person (the upload and its view anchors, made again as the engine
makes them). Per setting: the judge's similarity of each person's other photos alone (base against adapted:
does the scope still carry them along?), and with all adapters composed, retention and PSNR of 64 prior people.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import torch  # noqa: E402
# isort: on
from legato_core.adapters import ODEAdapter, active  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.identity.model import load_identity_model  # noqa: E402
from legato_core.metrics import identity_similarity, psnr  # noqa: E402
from legato_core.ranges import EVALUATION_START  # noqa: E402
from legato_core.unlearning.anchors import person_latents  # noqa: E402
from legato_core.unlearning.engine import ScopeConfig, make_scope  # noqa: E402
from legato_core.unlearning.targets import typical_radius  # noqa: E402

SETTINGS = [("none", None, None, "field", "latent"), ("upload", 0.55, 0.75, "field", "latent"),
            ("upload", 0.75, 1.0, "field", "latent"), ("anchors", 0.55, 0.75, "field", "latent"),
            ("anchors", 0.75, 1.0, "field", "latent"), ("anchors", 0.95, 1.2, "field", "latent"),
            ("anchors", 0.6, 0.85, "parallel", "latent"), ("anchors", 0.65, 0.85, "parallel", "latent"),
            ("anchors", 0.6, 0.9, "parallel", "latent"), ("anchors", 0.65, 0.9, "parallel", "latent"),
            ("anchors", 0.7, 0.9, "parallel", "latent"), ("anchors", 0.75, 1.0, "parallel", "latent")]
# with the inversion scatter's whitening (radii in typical radii through it); only where the generator has one
WHITENED = [("anchors", 0.7, 0.8, "field", "inversion_scatter")] + [
    ("anchors", inner, outer, "parallel", "inversion_scatter")
    for inner, outer in ((0.6, 0.72), (0.65, 0.75), (0.7, 0.8), (0.75, 0.85))]


class Knob:
    def __init__(self, backend, acts):
        self.backend, self.acts = backend, acts

    @contextmanager
    def at(self, s):
        with active(self.backend, [] if s is None else self.acts):
            yield self.backend


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", 1)))
    files = sorted(sys.argv[1:])
    backend = EmbeddedFaceBackend.from_pretrained(None)
    judge = load_identity_model("judge")
    unit = typical_radius(backend)
    adapters, saved = [], []
    for f in files:
        adapter = ODEAdapter.load(f, backend)
        if adapter.description.get("seed", 0) >= EVALUATION_START:
            raise SystemExit("validation adapters only")
        adapters.append(adapter)
        saved.append(torch.load(Path(f).with_suffix(".pt"), weights_only=True))
    anchors = [person_latents(backend, s["w"], 8, a.description.get("seed", 0)) for s, a in zip(saved, adapters,
                                                                                                 strict=True)]
    keep = backend.sample_latents(64, torch.Generator().manual_seed(99))
    views = backend.canonical_views(4)
    lat, vw = keep.repeat_interleave(4, 0), views.repeat(len(keep), 1)
    with torch.no_grad(), active(backend, []):
        before = backend.render(lat, vw)
    print(f"typical radius {unit:.3f}; {len(files)} adapters: {', '.join(Path(f).stem for f in files)}")
    print("| centres | inner | outer | carry | metric | other photos, each adapter alone (judge, per id) | mean | "
          "all composed: retention mean / p5 | others' PSNR dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    settings = SETTINGS + (WHITENED if backend.inversion_whitening is not None else [])
    for centres, inner, outer, carry, metric in settings:
        for a, s, anc in zip(adapters, saved, anchors, strict=True):
            a.set_scope(None if centres == "none" else make_scope(
                backend, s["w"] if centres == "upload" else anc, ScopeConfig(inner, outer, carry, metric)))
        acts = [(a, a.config.t_max) for a in adapters]
        with torch.no_grad():
            others = [float(identity_similarity(Knob(backend, [act]), s["ow"], views, 1.0, judge).mean())
                      for act, s in zip(acts, saved, strict=True)]
            ret = identity_similarity(Knob(backend, acts), keep, views, 1.0, judge)
            with active(backend, acts):
                after = backend.render(lat, vw)
        db = psnr(before, after).clamp(max=100).mean()
        how = f"{carry} | {metric}" if centres != "none" else "– | –"
        print(f"| {centres} | {inner or '–'} | {outer or '–'} | {how} | {' / '.join(f'{o:.2f}' for o in others)} | "
              f"{sum(others) / len(others):.3f} | {ret.mean():.3f} / {torch.quantile(ret, 0.05):.3f} | {db:.1f} |")


if __name__ == "__main__":
    main()
