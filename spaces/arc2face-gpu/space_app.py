"""Entry of the Arc2Face GPU Space: fetch the models, then start legato's app on the arc2face backend.

Everything is fetched at start-up with no variable to set: Arc2Face's UNet and encoder and SD 1.5's VAE, tokenizer
and scheduler from the hub (only the files used, ``legato_core.hub``), and an insightface pack composed of
antelopev2's detector (extracted from insightface's own antelopev2 zip, SHA-256 pinned) and Arc2Face's
``arcface.onnx`` (antelopev2's ``glintr100.onnx`` gives the wrong identity and is never fetched). Every ``LEGATO_*``
setting below is a default that the Space's variables override; ``ANTELOPEV2_DETECTOR`` optionally names another
copy of the detector on the hub (``owner/repo/path/scrfd_10g_bnkps.onnx``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARC2FACE_REPO = "FoivosPar/Arc2Face"
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DETECTOR_ENV = "ANTELOPEV2_DETECTOR"  # optional: owner/repo/path/to/scrfd_10g_bnkps.onnx on the hub
DETECTOR_NAME = "scrfd_10g_bnkps.onnx"
# fp16 as Arc2Face's own code; gradient checkpointing: training memory, see README.md
DEFAULTS = {"LEGATO_BACKEND": "arc2face", "LEGATO_MODEL_PATH": ARC2FACE_REPO, "LEGATO_BASE_MODEL_PATH": SD15_REPO,
            "LEGATO_ALLOW_DOWNLOADS": "1", "LEGATO_DEVICE": "cuda", "LEGATO_DTYPE": "fp16",
            "LEGATO_GRADIENT_CHECKPOINTING": "1"}


def link(target: str | Path, path: Path) -> Path:
    """``path`` -> ``target`` as a symlink, replacing whatever is there (e.g. a link into a cleared hub cache)."""
    if path.is_symlink() or path.exists():
        if path.is_symlink() and os.readlink(path) == str(target) and path.exists():
            return path
        path.unlink()
    path.symlink_to(target)
    return path


def fetch_detector(directory: Path, environ: Mapping[str, str]) -> Path:
    """antelopev2's detector in ``directory``: from the hub file named by ``ANTELOPEV2_DETECTOR`` when set, else
    extracted from insightface's antelopev2 zip (both SHA-256s pinned in ``legato_core.hub``)."""
    from legato_core import hub

    spec = environ.get(DETECTOR_ENV, "").strip()
    if not spec:
        return hub.fetch_zip_member(hub.ANTELOPEV2_URLS, hub.ANTELOPEV2_SHA256, hub.ANTELOPEV2_DETECTOR,
                                    hub.ANTELOPEV2_DETECTOR_SHA256, directory / DETECTOR_NAME)
    parts = spec.split("/")
    if len(parts) < 3 or not parts[-1].endswith(".onnx"):
        raise SystemExit(f"{DETECTOR_ENV} names a hub file (owner/repo/path/{DETECTOR_NAME}), or leave it unset to "
                         f"use insightface's antelopev2 zip; got {spec!r}")
    if "glintr100" in parts[-1]:
        raise SystemExit(f"{DETECTOR_ENV} names glintr100.onnx, a recognition model: Arc2Face needs antelopev2's "
                         f"detector {DETECTOR_NAME} here, and its own arcface.onnx for recognition")
    from huggingface_hub import hf_hub_download

    return link(hf_hub_download(repo_id="/".join(parts[:2]), filename="/".join(parts[2:])), directory / parts[-1])


def compose_pack(directory: Path, environ: Mapping[str, str]) -> Path:
    """``directory`` with antelopev2's detector and Arc2Face's ``arcface.onnx`` (nothing else)."""
    from huggingface_hub import hf_hub_download

    directory.mkdir(parents=True, exist_ok=True)
    fetch_detector(directory, environ)
    link(hf_hub_download(repo_id=ARC2FACE_REPO, filename="arcface.onnx"), directory / "arcface.onnx")
    return directory


def start_up(environ: MutableMapping[str, str], models: Path | None = None) -> MutableMapping[str, str]:
    """The Space's configuration: defaults for the unset ``LEGATO_*`` variables and a composed pack."""
    for key, value in DEFAULTS.items():
        environ.setdefault(key, value)
    if not environ.get("LEGATO_INSIGHTFACE_PACK"):
        pack = compose_pack((models or HERE / "models") / "antelopev2", environ)
        environ["LEGATO_INSIGHTFACE_PACK"] = str(pack)
    return environ


def main() -> None:
    sys.path.insert(0, str(HERE))
    start_up(os.environ)
    import app

    app.main([])


if __name__ == "__main__":
    main()
