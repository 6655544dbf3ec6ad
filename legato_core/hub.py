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
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .checksums import file_sha256

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


# insightface publishes antelopev2 only as a zip (360,662,982 bytes); Arc2Face needs just its detector from it
ANTELOPEV2_URLS = ("https://github.com/deepinsight/insightface/releases/download/model-zoo/antelopev2.zip",  # 2.1's
                   "https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip")
ANTELOPEV2_SHA256 = "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5"
ANTELOPEV2_DETECTOR = "antelopev2/scrfd_10g_bnkps.onnx"  # 16,923,827 bytes
ANTELOPEV2_DETECTOR_SHA256 = "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"


def fetch_zip_member(urls: tuple[str, ...], sha256: str, member: str, member_sha256: str, dest: Path) -> Path:
    """``member`` of the zip at the first of ``urls`` that answers, both checked against pinned SHA-256s, at
    ``dest`` (kept when it already holds those bytes; a stale link there is replaced). Raises RuntimeError."""
    dest = Path(dest)
    if dest.is_file() and file_sha256(dest) == member_sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        archive, errors = Path(tmp) / "download.zip", []
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
                break
            except OSError as e:
                errors.append(f"{url}: {e}")
        else:
            raise RuntimeError(f"could not download {Path(member).name}: " + "; ".join(errors))
        if (got := file_sha256(archive)) != sha256:
            raise RuntimeError(f"{url} has SHA-256 {got}, not the pinned {sha256}: refusing to use it")
        with zipfile.ZipFile(archive) as zf:
            zf.extract(member, tmp)
        extracted = Path(tmp) / member
        if (got := file_sha256(extracted)) != member_sha256:
            raise RuntimeError(f"{member} in {url} has SHA-256 {got}, not the pinned {member_sha256}")
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.replace(extracted, dest)
    return dest
