"""Hugging Face hub ids for the model flags, only when the user allows downloads.

Why a gate: legato runs offline by default (tests, CI, the CPU demo), and a mistyped local path must not silently
start a multi-gigabyte download. ``--model-path``, ``--base-model-path`` and ``--insightface-pack`` accept a hub id
(``owner/name``, optionally ``owner/name/sub/folder`` and ``@revision``) only with ``--allow-downloads`` or
``LEGATO_ALLOW_DOWNLOADS=1``; without them a hub id is an error that names the flag. A value that exists on disk is
always a local path, so the default path never touches the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DOWNLOAD_FLAG = "--allow-downloads"
DOWNLOAD_ENV = "LEGATO_ALLOW_DOWNLOADS"
# which files each option needs from a hub repo (everything else, e.g. fp16 copies or pickles we never read, is left)
HUB_FILES = {
    "model_path": ["*.json", "*.txt", "*.safetensors", "**/*.json", "**/*.txt", "**/*.safetensors"],
    "base_model_path": ["vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/*",
                        "scheduler/scheduler_config.json"],
    "insightface_pack": ["*.onnx", "**/*.onnx"],
}
# per backend: Arc2Face's repo also holds ControlNet and adapter weights (~1.5 GB) that legato never reads
BACKEND_HUB_FILES = {
    "arc2face": {"model_path": ["arc2face/config.json", "arc2face/diffusion_pytorch_model.safetensors",
                                "encoder/config.json", "encoder/pytorch_model.bin"]},  # loaded weights-only
}
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<sub>(?:/[\w.-]+)*)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class HubRef:
    """``owner/name[/sub/folder][@revision]``: a repository, a folder inside it and a revision."""

    repo_id: str
    subfolder: str = ""
    revision: str | None = None


def downloads_allowed(flag: bool = False, environ: Mapping[str, str] | None = None) -> bool:
    """The command-line flag, or ``LEGATO_ALLOW_DOWNLOADS`` set to 1/true/yes."""
    env = os.environ if environ is None else environ
    return bool(flag) or (env.get(DOWNLOAD_ENV) or "").strip().lower() in ("1", "true", "yes")


def parse_hub_id(value: str | os.PathLike | None) -> HubRef | None:
    """A HubRef when ``value`` reads as a hub id and is not an existing local path; else None."""
    if value is None:
        return None
    text = str(value)
    if text.startswith(("/", "~", ".", "\\")) or Path(text).expanduser().exists():
        return None
    m = _HUB_ID.match(text)
    if m is None:
        return None
    return HubRef(m["repo"], m["sub"].strip("/"), m["rev"])


def hub_error(flag: str, value: str) -> str:
    return (f"{flag} {value}: no such local folder. It reads as a Hugging Face hub id, and downloads are off: add "
            f"{DOWNLOAD_FLAG} (or set {DOWNLOAD_ENV}=1) to fetch it, or give a local path")


def hub_patterns(option: str, kind: str | None = None) -> list[str] | None:
    """The files to fetch for ``option`` of backend ``kind`` (None: the whole repository)."""
    return BACKEND_HUB_FILES.get(kind or "", {}).get(option, HUB_FILES.get(option))


def resolve_location(value: str | None, option: str, allow_downloads: bool, flag: str | None = None,
                     kind: str | None = None) -> str | None:
    """A local folder for ``value``: the path itself, or (downloads allowed) the hub snapshot's folder.

    Raises ValueError naming ``flag`` for a hub id without permission; other missing paths are returned unchanged
    for the caller's own "no such folder" check.
    """
    ref = parse_hub_id(value)
    if ref is None:
        return None if value is None else str(Path(value).expanduser())
    if not allow_downloads:
        raise ValueError(hub_error(flag or f"--{option.replace('_', '-')}", str(value)))
    from huggingface_hub import snapshot_download

    patterns = hub_patterns(option, kind)
    if patterns is not None and ref.subfolder:
        patterns = [f"{ref.subfolder}/{p}" for p in patterns]
    local = snapshot_download(repo_id=ref.repo_id, revision=ref.revision, allow_patterns=patterns)
    return str(Path(local) / ref.subfolder) if ref.subfolder else str(local)
