"""Hub ids for the model flags resolve only through --allow-downloads / LEGATO_ALLOW_DOWNLOADS, with
``huggingface_hub.snapshot_download`` replaced by a fake (no network in tests); without permission the error names the
flag. Each option fetches only the files legato reads, checked against listings of the real hub repositories
(tests/fixtures/hub_listings)."""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

import pytest

from legato_core import hub
from legato_core.backends.registry import BackendSpec
from legato_core.cli import add_backend_options


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A snapshot_download that records its calls and returns a local folder with the requested layout."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        local = tmp_path / "snapshots" / repo_id.replace("/", "--")
        (local / "antelopev2").mkdir(parents=True, exist_ok=True)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv(hub.DOWNLOAD_ENV, raising=False)
    return calls


def _spec(argv: list[str], environ: dict | None = None) -> BackendSpec:
    ap = argparse.ArgumentParser()
    add_backend_options(ap, judge=False, environ=environ)
    return BackendSpec.from_args(ap.parse_args(argv))


def test_hub_ids_are_recognised_and_local_paths_are_never_hub_ids(tmp_path):
    assert hub.parse_hub_id("FoivosPar/Arc2Face") == hub.HubRef("FoivosPar/Arc2Face")
    assert hub.parse_hub_id("me/packs/antelopev2@v1") == hub.HubRef("me/packs", "antelopev2", "v1")
    (tmp_path / "owner" / "name").mkdir(parents=True)
    existing = tmp_path / "owner" / "name"
    assert hub.parse_hub_id(existing) is None  # exists on disk: a local path
    for local in ("/models/sd15", "~/models/sd15", "./models", "plainname", None):
        assert hub.parse_hub_id(local) is None


def test_without_the_flag_a_hub_id_is_an_error_naming_the_flag(fake_hub):
    spec = _spec(["--backend", "arc2face", "--model-path", "FoivosPar/Arc2Face", "--insightface-pack", "/nope"])
    with pytest.raises(ValueError, match=r"--model-path FoivosPar/Arc2Face: .*add --allow-downloads \(or set "
                                         r"LEGATO_ALLOW_DOWNLOADS=1\)"):
        spec.check()
    with pytest.raises(ValueError, match=r"--base-model-path .*--allow-downloads"):
        hub.resolve_location("stable-diffusion-v1-5/stable-diffusion-v1-5", "base_model_path", False,
                             "--base-model-path")
    assert fake_hub == []  # nothing was fetched


@pytest.mark.parametrize("how", ["flag", "env"])
def test_with_permission_hub_ids_resolve_to_snapshot_folders(fake_hub, monkeypatch, how):
    argv = ["--backend", "arc2face", "--model-path", "FoivosPar/Arc2Face", "--base-model-path",
            "stable-diffusion-v1-5/stable-diffusion-v1-5", "--insightface-pack", "me/packs/antelopev2@main"]
    if how == "flag":
        spec = _spec([*argv, "--allow-downloads"])
    else:
        monkeypatch.setenv(hub.DOWNLOAD_ENV, "1")
        spec = _spec(argv)
    assert spec.allow_downloads
    spec.check()  # hub ids pass the existence check only with permission
    assert fake_hub == []  # ...and are not fetched before the backend loads
    opts = spec.options()
    assert [c["repo_id"] for c in fake_hub] == ["FoivosPar/Arc2Face", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                                                "me/packs"]
    assert opts["model_path"].endswith("FoivosPar--Arc2Face")
    assert opts["insightface_pack"].endswith("me--packs/antelopev2") and fake_hub[2]["revision"] == "main"
    assert fake_hub[2]["allow_patterns"] == ["antelopev2/*.onnx", "antelopev2/**/*.onnx"]  # only the pack's models
    assert "vae/diffusion_pytorch_model.safetensors" in fake_hub[1]["allow_patterns"]  # not the whole SD1.5 repo
    assert not any("unet" in p for p in fake_hub[1]["allow_patterns"])


def test_the_app_reads_the_permission_from_its_environment(fake_hub):
    spec = _spec(["--backend", "ddpm", "--model-path", "google/ddpm-celebahq-256"],
                 environ={hub.DOWNLOAD_ENV: "true"})
    assert spec.allow_downloads and not _spec([], environ={}).allow_downloads


def test_default_path_never_downloads(fake_hub, tmp_path):
    assert _spec([]).is_default and _spec(["--allow-downloads"]).is_default
    local = tmp_path / "models"
    local.mkdir()
    assert hub.resolve_location(str(local), "model_path", True) == str(local)  # an existing folder stays local
    with pytest.raises(FileNotFoundError, match="no such folder"):  # a missing local path is not a hub id
        BackendSpec("ddpm", model_path=str(tmp_path / "missing"), allow_downloads=True).check()
    assert fake_hub == []


# -- which files are fetched ----------------------------------------------------------------------------------------
LISTINGS = Path(__file__).parent / "fixtures" / "hub_listings"


def _listing(repo: str) -> list[str]:
    lines = (LISTINGS / f"{repo.replace('/', '--')}.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def _selected(files: list[str], patterns: list[str]) -> set[str]:
    return {f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)}


@pytest.mark.parametrize(("repo", "option", "used"), [
    ("FoivosPar/Arc2Face", "model_path",  # the UNet and the text encoder; not controlnet/, exp_adapter/, ref_adapter/
     {"arc2face/config.json", "arc2face/diffusion_pytorch_model.safetensors", "encoder/config.json",
      "encoder/pytorch_model.bin"}),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "base_model_path",  # VAE, tokenizer, scheduler; no fp16 copies
     {"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/merges.txt",
      "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
      "scheduler/scheduler_config.json"}),
])
def test_arc2face_fetches_exactly_the_files_it_reads(repo, option, used):
    files = _listing(repo)
    assert used <= set(files)
    patterns = hub.hub_patterns(option, "arc2face")
    assert _selected(files, patterns) == used
    utils = pytest.importorskip("huggingface_hub.utils")
    assert set(utils.filter_repo_objects(files, allow_patterns=patterns)) == used  # the client's own matching


def test_the_arc2face_spec_passes_its_patterns_to_the_hub(fake_hub, monkeypatch):
    monkeypatch.setenv(hub.DOWNLOAD_ENV, "1")
    BackendSpec("arc2face", "FoivosPar/Arc2Face", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                insightface_pack="me/packs/antelopev2", allow_downloads=True).options()
    arc2face = next(c for c in fake_hub if c["repo_id"] == "FoivosPar/Arc2Face")
    assert arc2face["allow_patterns"] == hub.hub_patterns("model_path", "arc2face")
    assert not _selected(_listing("FoivosPar/Arc2Face"), arc2face["allow_patterns"]) & {
        "controlnet/diffusion_pytorch_model.safetensors", "ref_adapter/pytorch_lora_weights.safetensors"}
