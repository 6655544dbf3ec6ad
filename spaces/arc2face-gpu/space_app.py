"""Entry of the Arc2Face GPU Space: fetch the models from the hub, then start legato's app on the arc2face backend.

Why a composed insightface pack: Arc2Face needs antelopev2's detector with Arc2Face's own ``arcface.onnx``
recognition model (antelopev2's ``glintr100.onnx`` gives the wrong identity), and the two come from different places.
Every ``LEGATO_*`` setting below is a default that the Space's variables override.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARC2FACE_REPO = "FoivosPar/Arc2Face"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DETECTOR_ENV = "ANTELOPEV2_DETECTOR"  # owner/repo/path/to/scrfd_10g_bnkps.onnx on the hub
DEFAULTS = {"LEGATO_BACKEND": "arc2face", "LEGATO_MODEL_PATH": ARC2FACE_REPO, "LEGATO_BASE_MODEL_PATH": SD15_REPO,
            "LEGATO_ALLOW_DOWNLOADS": "1", "LEGATO_DEVICE": "cuda", "LEGATO_DTYPE": "bf16"}


def compose_pack(directory: Path, environ: Mapping[str, str]) -> Path:
    """``directory`` with antelopev2's detector (from ``ANTELOPEV2_DETECTOR``) and Arc2Face's ``arcface.onnx``."""
    from huggingface_hub import hf_hub_download

    spec = environ.get(DETECTOR_ENV, "").strip()
    parts = spec.split("/")
    if len(parts) < 3 or not parts[-1].endswith(".onnx"):
        raise SystemExit(f"set {DETECTOR_ENV} to the hub file of antelopev2's detector, e.g. "
                         "owner/repo/antelopev2/scrfd_10g_bnkps.onnx (insightface ships antelopev2 as a zip, not on "
                         f"the hub: use a copy you trust); got {spec!r}")
    if "glintr100" in parts[-1]:
        raise SystemExit(f"{DETECTOR_ENV} names glintr100.onnx, a recognition model: Arc2Face needs antelopev2's "
                         "detector scrfd_10g_bnkps.onnx here, and its own arcface.onnx for recognition")
    directory.mkdir(parents=True, exist_ok=True)
    detector = hf_hub_download(repo_id="/".join(parts[:2]), filename="/".join(parts[2:]))
    arcface = hf_hub_download(repo_id=ARC2FACE_REPO, filename="arcface.onnx")
    for src, name in ((detector, parts[-1]), (arcface, "arcface.onnx")):
        link = directory / name
        if not link.exists():
            link.symlink_to(src)
    return directory


def main() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("LEGATO_INSIGHTFACE_PACK"):
        os.environ["LEGATO_INSIGHTFACE_PACK"] = str(compose_pack(HERE / "models" / "antelopev2", os.environ))
    sys.path.insert(0, str(HERE))
    import app

    app.main([])


if __name__ == "__main__":
    main()
