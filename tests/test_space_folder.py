"""The ready-to-copy GPU Space (spaces/arc2face-gpu): front matter a Space accepts, the repository's pins, a make
script that assembles it, and an entry that composes antelopev2's detector with Arc2Face's arcface.onnx (hub calls
replaced by a fake: no network in tests)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
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
    assert meta["suggested_hardware"] in ("a10g-small", "a10g-large", "zero-a10g")
    assert (SPACE / meta["app_file"]).is_file()


def test_requirements_use_the_repositorys_pins():
    space = _pins(SPACE / "requirements.txt")
    repo = {**_pins(ROOT / "requirements.txt"), **_pins(ROOT / "requirements-backends.txt")}
    assert {"torch", "gradio", "diffusers", "transformers", "insightface", "dlib-bin"} <= set(space)
    assert {k: v for k, v in space.items() if k in repo} == {k: repo[k] for k in space if k in repo}
    assert "onnxruntime-gpu" not in (SPACE / "requirements.txt").read_text()  # detection stays on the CPU


def test_make_space_assembles_code_app_and_space_files(tmp_path):
    subprocess.run(["bash", str(SPACE / "make_space.sh"), str(tmp_path / "space")], check=True, capture_output=True)
    out = tmp_path / "space"
    for name in ("README.md", "requirements.txt", "space_app.py", "app.py", "legato_core/hub.py"):
        assert (out / name).is_file(), name
    assert _front_matter(out / "README.md")["app_file"] == "space_app.py"


@pytest.fixture
def space_app(monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        path = tmp_path / "hub" / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"onnx")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    spec = importlib.util.spec_from_file_location("space_app", SPACE / "space_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, calls


def test_pack_is_antelopev2_detector_plus_arc2faces_arcface(space_app, tmp_path):
    module, calls = space_app
    pack = module.compose_pack(tmp_path / "pack", {module.DETECTOR_ENV: "me/antelope/antelopev2/scrfd_10g_bnkps.onnx"})
    assert sorted(p.name for p in pack.iterdir()) == ["arcface.onnx", "scrfd_10g_bnkps.onnx"]  # no glintr100
    assert calls == [("me/antelope", "antelopev2/scrfd_10g_bnkps.onnx"), ("FoivosPar/Arc2Face", "arcface.onnx")]


def test_pack_needs_the_detector_variable_and_refuses_glintr100(space_app, tmp_path):
    module, calls = space_app
    with pytest.raises(SystemExit, match="set ANTELOPEV2_DETECTOR"):
        module.compose_pack(tmp_path / "pack", {})
    with pytest.raises(SystemExit, match="glintr100"):
        module.compose_pack(tmp_path / "pack", {module.DETECTOR_ENV: "me/antelope/antelopev2/glintr100.onnx"})
    assert calls == []
    assert module.DEFAULTS["LEGATO_ALLOW_DOWNLOADS"] == "1" and module.DEFAULTS["LEGATO_BACKEND"] == "arc2face"
