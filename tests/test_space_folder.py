"""The ready-to-copy GPU Space (spaces/arc2face-gpu): front matter a Space accepts, the repository's pins, a make
script that assembles it, and a start-up that goes from nothing to a rendered face with no variable set. The hub
client and the antelopev2 zip download are replaced by stand-ins served from a local folder (no network in tests):
tiny random models in the real repositories' layouts, with the pinned hashes set to the stand-ins' own."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "arc2face-gpu"


def _front_matter(readme: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    text = readme.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if m:
            pins[m[1].lower()] = m[2]
    return pins


def test_front_matter_is_a_gradio_gpu_space_on_the_repos_gradio():
    meta = _front_matter(SPACE / "README.md")
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == _front_matter(ROOT / "README.md")["sdk_version"]
    assert meta["suggested_hardware"] in ("a10g-small", "a10g-large")  # dedicated GPU: no ZeroGPU wrapping
    assert (SPACE / meta["app_file"]).is_file()


def test_requirements_use_the_repositorys_pins():
    space = _pins(SPACE / "requirements.txt")
    repo = {**_pins(ROOT / "requirements.txt"), **_pins(ROOT / "requirements-backends.txt")}
    assert {"torch", "gradio", "diffusers", "transformers", "insightface", "dlib-bin"} <= set(space)
    assert {k: v for k, v in space.items() if k in repo} == {k: repo[k] for k in space if k in repo}
    assert "onnxruntime-gpu" not in (SPACE / "requirements.txt").read_text()  # detection stays on the CPU
    names = [re.split(r"[=<>\s]", line)[0] for line in (SPACE / "requirements.txt").read_text().splitlines()]
    assert "spaces" not in names  # nothing is wrapped for ZeroGPU


def test_make_space_assembles_code_app_and_space_files(tmp_path):
    subprocess.run(["bash", str(SPACE / "make_space.sh"), str(tmp_path / "space")], check=True, capture_output=True)
    out = tmp_path / "space"
    for name in ("README.md", "requirements.txt", "space_app.py", "app.py", "legato_core/hub.py"):
        assert (out / name).is_file(), name
    assert _front_matter(out / "README.md")["app_file"] == "space_app.py"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Local copies of FoivosPar/Arc2Face, SD 1.5 and antelopev2.zip in the real layouts (plus files legato must
    not fetch), built from the tiny random models of ``legato_core.backends.testing``."""
    for mod in ("huggingface_hub", "diffusers", "transformers", "onnx", "onnxruntime", "insightface"):
        pytest.importorskip(mod)
    import torch
    from safetensors.torch import load_file

    from legato_core.backends.testing import build_tiny_arc2face, build_tiny_insightface_pack

    root = tmp_path_factory.mktemp("stand_ins")
    arc2face = root / "repos" / "FoivosPar/Arc2Face"
    sd15 = root / "repos" / "stable-diffusion-v1-5/stable-diffusion-v1-5"
    build_tiny_arc2face(arc2face, sd15)
    encoder = arc2face / "encoder"  # Arc2Face ships the encoder as pytorch_model.bin only
    torch.save(load_file(encoder / "model.safetensors"), encoder / "pytorch_model.bin")
    (encoder / "model.safetensors").unlink()
    pack = build_tiny_insightface_pack(root / "pack", detector="blob")
    shutil.copy(pack / "rec_tiny.onnx", arc2face / "arcface.onnx")
    for junk in ("controlnet/config.json", "controlnet/diffusion_pytorch_model.safetensors",
                 "exp_adapter/exp_adapter.bin", "ref_adapter/pytorch_lora_weights.safetensors"):
        (arc2face / junk).parent.mkdir(parents=True, exist_ok=True)
        (arc2face / junk).write_bytes(b"not used")
    for junk in ("model_index.json", "unet/config.json", "text_encoder/model.safetensors"):
        (sd15 / junk).parent.mkdir(parents=True, exist_ok=True)
        (sd15 / junk).write_text("{}")
    archive = root / "antelopev2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pack / "det_tiny.onnx", "antelopev2/scrfd_10g_bnkps.onnx")
        zf.writestr("antelopev2/glintr100.onnx", b"another identity space")
    return {"repos": root / "repos", "zip": archive, "zip_sha256": _sha256(archive),
            "detector_sha256": _sha256(pack / "det_tiny.onnx"), "rec_sha256": _sha256(pack / "rec_tiny.onnx")}


@pytest.fixture
def offline_hub(stand_ins, tmp_path, monkeypatch):
    """snapshot_download / hf_hub_download / urlopen answered from the stand-ins; the pins set to their hashes."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.utils import filter_repo_objects

    from legato_core import hub
    from legato_core.backends import insightface_identity

    calls = {"snapshot": [], "file": [], "url": []}
    cache = tmp_path / "hub_cache"

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        src = stand_ins["repos"] / repo_id
        files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
        chosen = list(filter_repo_objects(files, allow_patterns=allow_patterns))
        calls["snapshot"].append((repo_id, chosen))
        for f in chosen:
            (cache / repo_id / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / f, cache / repo_id / f)
        return str(cache / repo_id)

    def hf_hub_download(repo_id, filename, **kwargs):
        calls["file"].append((repo_id, filename))
        out = cache / "files" / repo_id / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stand_ins["repos"] / repo_id / filename, out)
        return str(out)

    def urlopen(url, timeout=None):
        calls["url"].append(url)
        if url != hub.ANTELOPEV2_URLS[0]:
            raise urllib.error.URLError("no network in tests")
        return io.BytesIO(stand_ins["zip"].read_bytes())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(hub, "ANTELOPEV2_SHA256", stand_ins["zip_sha256"])
    monkeypatch.setattr(hub, "ANTELOPEV2_DETECTOR_SHA256", stand_ins["detector_sha256"])
    monkeypatch.setattr(insightface_identity, "ARC2FACE_RECOGNITION_SHA256", stand_ins["rec_sha256"])
    return calls


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("space_app", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_space_starts_as_copied_and_renders_a_face(offline_hub, stand_ins, tmp_path):
    from PIL import Image

    from legato_core import hub
    from legato_core.backends.registry import BackendSpec
    from legato_core.backends.testing import tiny_blob_photo
    from legato_core.cli import add_backend_options
    from legato_core.faces import prepare_face

    subprocess.run(["bash", str(SPACE / "make_space.sh"), str(tmp_path / "space")], check=True, capture_output=True)
    space_app = _load(tmp_path / "space" / "space_app.py")
    # a CPU stands in for the Space's GPU; nothing else is set: no detector variable, no pack, no model path
    env = space_app.start_up({"LEGATO_DEVICE": "cpu", "LEGATO_DTYPE": "fp32", "LEGATO_INFERENCE_STEPS": "2"})
    pack = Path(env["LEGATO_INSIGHTFACE_PACK"])
    assert pack == tmp_path / "space" / "models" / "antelopev2"
    assert sorted(p.name for p in pack.iterdir()) == ["arcface.onnx", "scrfd_10g_bnkps.onnx"]  # no glintr100
    assert offline_hub["url"] == [hub.ANTELOPEV2_URLS[0]]  # insightface's own zip, the pinned one
    assert offline_hub["file"] == [("FoivosPar/Arc2Face", "arcface.onnx")]
    assert env["LEGATO_GRADIENT_CHECKPOINTING"] == "1" and space_app.DEFAULTS["LEGATO_DTYPE"] == "fp16"

    ap = argparse.ArgumentParser()
    add_backend_options(ap, judge=False, environ=env)  # as app.py reads its environment
    spec = BackendSpec.from_args(ap.parse_args([]))
    backend = spec.load()
    fetched = dict(offline_hub["snapshot"])
    assert sorted(fetched["FoivosPar/Arc2Face"]) == ["arc2face/config.json",
                                                     "arc2face/diffusion_pytorch_model.safetensors",
                                                     "encoder/config.json", "encoder/pytorch_model.bin"]
    assert not any(f.startswith(("unet/", "text_encoder/")) for f in
                   fetched["stable-diffusion-v1-5/stable-diffusion-v1-5"])
    assert backend.name == "arc2face" and backend.gradient_checkpointing

    photo = Image.fromarray(tiny_blob_photo((320, 256), (80, 64, 176, 160), seed=3))
    face = prepare_face(photo, backend.face_crop())
    emb, seed = backend.invert(face.image[None])
    image = backend.render(emb, seed)
    assert image.shape == (1, 3, 16, 16) and bool(image.isfinite().all())


def test_a_stale_link_into_a_cleared_hub_cache_is_replaced(offline_hub, tmp_path):
    space_app = _load(SPACE / "space_app.py")
    pack = tmp_path / "pack"
    pack.mkdir()
    for name in ("arcface.onnx", "scrfd_10g_bnkps.onnx"):
        (pack / name).symlink_to(tmp_path / "cleared-cache" / name)  # the link survives, its target is gone
    space_app.compose_pack(pack, {})
    assert all((pack / n).is_file() for n in ("arcface.onnx", "scrfd_10g_bnkps.onnx"))
    space_app.compose_pack(pack, {})  # and a second start keeps what is there
    assert len(offline_hub["url"]) == 1


def test_the_zip_and_its_detector_must_match_the_pinned_hashes(offline_hub, tmp_path, monkeypatch):
    from legato_core import hub

    space_app = _load(SPACE / "space_app.py")
    monkeypatch.setattr(hub, "ANTELOPEV2_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="not the pinned"):
        space_app.compose_pack(tmp_path / "pack", {})
    assert not (tmp_path / "pack" / "scrfd_10g_bnkps.onnx").exists()
    assert len(hub.ANTELOPEV2_URLS) == 2 and "insightface/releases/download" in hub.ANTELOPEV2_URLS[0]


def test_the_detector_variable_is_an_optional_override_and_refuses_glintr100(offline_hub, stand_ins, tmp_path):
    space_app = _load(SPACE / "space_app.py")
    shutil.copy(stand_ins["repos"] / "FoivosPar/Arc2Face/arcface.onnx",
                stand_ins["repos"] / "FoivosPar/Arc2Face/scrfd_10g_bnkps.onnx")  # any hub file will do here
    override = {space_app.DETECTOR_ENV: "FoivosPar/Arc2Face/scrfd_10g_bnkps.onnx"}
    pack = space_app.compose_pack(tmp_path / "pack", override)
    assert sorted(p.name for p in pack.iterdir()) == ["arcface.onnx", "scrfd_10g_bnkps.onnx"]
    assert offline_hub["url"] == []  # the zip was not needed
    with pytest.raises(SystemExit, match="glintr100"):
        space_app.compose_pack(tmp_path / "pack", {space_app.DETECTOR_ENV: "me/antelope/antelopev2/glintr100.onnx"})
    (stand_ins["repos"] / "FoivosPar/Arc2Face/scrfd_10g_bnkps.onnx").unlink()
