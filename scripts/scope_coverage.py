"""How much of a person's other photos does a scope of radius r hold, and how many prior people does it take along?

    python scripts/scope_coverage.py --out docs/many/scope_coverage.md

Per validation person (100,610-100,809 by default; none of them a tuning id of tune_scope.py or a scatter id):
the upload (view 0) and its 8 view anchors, made as the engine makes them, are the scope's centres; the 5 other
photos (views 1-5) are inverted, and their distance to the nearest centre is taken in both metrics (plain latent
distance, and through the generator's inversion scatter), in typical radii of each. Against it: the share of
20,000 prior people within r of the first 40 people's centres. No adapter is trained: a photo beyond the outer
radius is drawn exactly as before by any adapter with that scope, which is how a scope misses someone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import torch  # noqa: E402
# isort: on
from legato_core import faceworld  # noqa: E402
from legato_core.adapters.scope import Scope  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.ranges import validation_ids_or_exit  # noqa: E402
from legato_core.unlearning.anchors import person_latents  # noqa: E402
from legato_core.unlearning.engine import ForgetConfig  # noqa: E402
from legato_core.unlearning.targets import typical_radius  # noqa: E402

RADII = (0.6, 0.65, 0.7, 0.72, 0.75, 0.8, 0.85, 0.9, 1.0)
PRIOR, PRIOR_PEOPLE = 20_000, 40


def nearest(x: torch.Tensor, centres: torch.Tensor, metric: torch.Tensor | None) -> torch.Tensor:
    """Each row's distance to the nearest centre, as a scope around ``centres`` with ``metric`` measures it."""
    return Scope(centres, 0.0, 1.0, metric=metric).distance(x)


def coverage(photos: torch.Tensor, prior: torch.Tensor, radius: float) -> dict:
    """photos (people, 5) and prior (people, PRIOR) distances in typical radii -> the table's row at ``radius``."""
    beyond = photos > radius
    return {"radius": radius, "photos_beyond": float(beyond.float().mean()),
            "people_with_a_photo_beyond": float(beyond.any(1).float().mean()),
            "prior_within": float((prior < radius).float().mean())}


def markdown(tables: dict[str, list[dict]], people: int, command: str) -> str:
    lines = [f"`{command}`", "", f"{people} validation people, 5 other photos each; prior people within the radius of "
             f"any of {PRIOR_PEOPLE} people's centres ({PRIOR:,} prior people):", "",
             "| metric | radius (typical radii) | other photos beyond it | people with a photo beyond it | "
             "prior people within it |", "|---|---|---|---|---|"]
    for metric, rows in tables.items():
        lines += [f"| {metric} | {r['radius']:g} | {100 * r['photos_beyond']:.1f} % | "
                  f"{100 * r['people_with_a_photo_beyond']:.1f} % | {100 * r['prior_within']:.3f} % |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-identity", type=int, default=100_610)
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ids = validation_ids_or_exit(args.first_identity, args.people)
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained(None)
    whitening = backend.inversion_whitening
    if whitening is None:
        raise SystemExit("this generator has no inversion_scatter.safetensors (python scripts/inversion_scatter.py)")
    metrics = {"latent": None, "inversion scatter": whitening}
    units = {name: typical_radius(backend, metric=m) for name, m in metrics.items()}
    prior = backend.sample_latents(PRIOR, torch.Generator().manual_seed(99))
    photos = {name: [] for name in metrics}
    near = {name: [] for name in metrics}
    config = ForgetConfig()
    for k, ident in enumerate(ids):
        w, _ = backend.invert(faceworld.render([ident], 0))
        others, _ = backend.invert(faceworld.render([ident] * 5, [1, 2, 3, 4, 5]))
        centres = person_latents(backend, w, config.view_anchors, config.seed)
        for name, m in metrics.items():
            photos[name].append(nearest(others, centres, m) / units[name])
            if k < PRIOR_PEOPLE:
                near[name].append(nearest(prior, centres, m) / units[name])
    tables = {name: [coverage(torch.stack(photos[name]), torch.stack(near[name]), r) for r in RADII]
              for name in metrics}
    text = markdown(tables, len(ids), " ".join(["python scripts/scope_coverage.py", *sys.argv[1:]]))
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
