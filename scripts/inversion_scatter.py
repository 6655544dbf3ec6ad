"""Where a person's other photos invert, around their upload: the generator's inversion scatter, for adapter scopes.

    python scripts/inversion_scatter.py                      # writes assets/generator/inversion_scatter.safetensors

Inverts 6 photos (views 0-5) of each of 400 validation people (101,500-101,899; never a tuning id of the engine),
centres each person's 6 latents on their mean, and keeps the scatter's covariance as a whitening matrix
(Sigma + ridge * mean eigenvalue)^(-1/2). A scope that measures distance through it (adapters/scope.py,
``ScopeConfig.metric="inversion_scatter"``) counts a step along the directions another photo of the same person
typically moves as short, and a step toward another person as long. Deterministic; about 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import legato_core.openmp  # noqa: E402, F401 - the CLI's OpenMP wait policy, before torch loads
import torch  # noqa: E402
# isort: on
from safetensors.torch import save_file  # noqa: E402

from legato_core import faceworld  # noqa: E402
from legato_core.backends.embedded import EmbeddedFaceBackend  # noqa: E402
from legato_core.ranges import validation_ids_or_exit  # noqa: E402

PHOTOS = 6


def whitening(latents: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-person latents (P, PHOTOS, D) -> (whitening matrix (D, D), the scatter's eigenvalues, descending)."""
    centred = (latents - latents.mean(1, keepdim=True)).reshape(-1, latents.shape[-1]).double()
    cov = centred.T @ centred / (len(centred) - len(latents))  # each person's mean costs one degree of freedom
    values, vectors = torch.linalg.eigh(cov)
    regular = values.clamp(min=0) + ridge * values.clamp(min=0).mean()
    return (vectors @ torch.diag(regular.rsqrt()) @ vectors.T).float(), values.flip(0).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-identity", type=int, default=101_500)
    ap.add_argument("--people", type=int, default=400)
    ap.add_argument("--ridge", type=float, default=0.3, help="added to the eigenvalues, times their mean")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-path", help="an embedded generator directory (default: the shipped one)")
    ap.add_argument("--out", type=Path, help="default: inversion_scatter.safetensors in the generator directory")
    args = ap.parse_args()
    ids = validation_ids_or_exit(args.first_identity, args.people)
    torch.set_num_threads(args.threads)
    backend = EmbeddedFaceBackend.from_pretrained(args.model_path)
    t0, latents = time.time(), []
    for i in ids:
        latents.append(backend.invert(faceworld.render([i] * PHOTOS, list(range(PHOTOS))))[0])
    latents = torch.stack(latents)
    matrix, values = whitening(latents, args.ridge)
    out = args.out or Path(args.model_path or ROOT / "assets" / "generator") / "inversion_scatter.safetensors"
    meta = {"made_by": " ".join(["python scripts/inversion_scatter.py", *sys.argv[1:]]),
            "identities": f"{ids.start}-{ids.stop - 1}", "photos_each": str(PHOTOS), "ridge": str(args.ridge),
            "generator_hash": backend.weight_hash()}
    save_file({"whitening": matrix.contiguous(), "eigenvalues": values.contiguous()}, out, metadata=meta)
    print(json.dumps({**meta, "seconds": round(time.time() - t0, 1), "out": str(out),
                      "top_10_share": round(float(values[:10].sum() / values.sum()), 3)}))


if __name__ == "__main__":
    main()
