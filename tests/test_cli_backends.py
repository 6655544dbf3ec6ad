"""Backend flags end to end on tiny random models: the CLI's forget/render on a DDPM folder with the dlib judge,
clear one-line errors for wrong flags, and the app/studio saying which backend is live. Images are noise: only the
mechanics are checked."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from legato_core.backends.registry import EMBEDDED_LABEL, BackendSpec
from legato_core.cli import add_backend_options, main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(ddpm folder, insightface pack folder, a photo) built once for the module."""
    for mod in ("diffusers", "onnx", "onnxruntime", "insightface"):
        pytest.importorskip(mod, reason=f"backend tests need {mod} (requirements-backends.txt)")
    from legato_core.backends.testing import build_tiny_ddpm, build_tiny_insightface_pack

    root = tmp_path_factory.mktemp("tiny")
    photo = root / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    return build_tiny_ddpm(root / "ddpm"), build_tiny_insightface_pack(root / "pack"), photo


def _ddpm_flags(tiny) -> list[str]:
    ddpm, pack, _ = tiny
    return ["--backend", "ddpm", "--model-path", str(ddpm), "--insightface-pack", str(pack), "--device", "cpu",
            "--inference-steps", "4"]


# -- CLI --------------------------------------------------------------------------------------------------------------
def test_forget_and_render_on_a_ddpm_folder_with_the_dlib_judge(tiny, tmp_path, capsys):
    _, _, photo = tiny
    adapter, report, png = tmp_path / "a.safetensors", tmp_path / "r.json", tmp_path / "t.png"
    assert main(["forget", *_ddpm_flags(tiny), "--image", str(photo), "--steps", "2", "--out", str(adapter),
                 "--report", str(report), "--threads", "1", "--eval-samples", "4", "--quiet"]) == 0, \
        capsys.readouterr().err
    rep = json.loads(report.read_text())
    assert rep["judge"] == "dlib" and rep["threshold"] == pytest.approx(0.4)  # 1 - dlib's distance 0.6
    assert "dlib" in rep["judge_network"] and "insightface pack" in rep["training_identity"]  # both named
    assert rep["backend"].startswith("ddpm from ") and "(cpu, fp32)" in rep["backend"]
    assert len(rep["curve"]) == 5 and rep["curve"][0][0] == 0 and rep["image"] == str(photo)
    for key in ("id_target", "retention_mean", "retention_p5", "fd_judge", "trainable_fraction"):
        assert np.isfinite(rep[key]), key
    assert adapter.stat().st_size > 1000
    assert main(["render", *_ddpm_flags(tiny), "--adapter", str(adapter), "--t", "0.8", "--image", str(photo),
                 "--views", "1", "--out", str(png)]) == 0, capsys.readouterr().err
    assert Image.open(png).size[0] >= 2 * 16


@pytest.mark.parametrize(("argv", "message"), [
    (["--backend", "arc2face"], "--model-path PATH"),
    (["--backend", "ddpm", "--model-path", "{tmp}/nope"], "--model-path {tmp}/nope: no such folder"),
    (["--backend", "ddpm", "--model-path", "{ddpm}", "--insightface-pack", "{tmp}/pack"],
     "--insightface-pack {tmp}/pack: no such folder"),
    (["--backend", "ddpm", "--model-path", "{ddpm}", "--judge", "insightface"], "needs --insightface-pack"),
    (["--backend", "ddpm", "--model-path", "{ddpm}", "--judge", "embedded"], "--judge dlib"),
    (["--dtype", "bf16"], "--dtype only applies to the arc2face and ddpm backends"),
])
def test_wrong_backend_flags_are_one_line_errors(tiny, tmp_path, capsys, argv, message):
    ddpm, _, photo = tiny
    argv = [a.format(tmp=tmp_path, ddpm=ddpm) for a in argv]
    code = main(["forget", *argv, "--image", str(photo), "--out", str(tmp_path / "a.safetensors"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err


def test_face_world_ids_and_bench_need_the_embedded_backend(tiny, tmp_path, capsys):
    assert main(["forget", *_ddpm_flags(tiny), "--identity", "200030", "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "give a photo with --image PATH for the ddpm backend" in capsys.readouterr().err
    assert main(["render", *_ddpm_flags(tiny), "--identity", "200030", "--adapter", "x.safetensors", "--t", "1",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "--image PATH" in capsys.readouterr().err
    assert main(["bench", *_ddpm_flags(tiny), "--out", str(tmp_path / "bench")]) == 2
    assert "not supported by bench yet: the benchmark runs on the embedded backend" in capsys.readouterr().err


def test_backend_flags_read_legato_environment_variables():
    ap = argparse.ArgumentParser()
    add_backend_options(ap, judge=False, environ={"LEGATO_BACKEND": "ddpm", "LEGATO_MODEL_PATH": "/m",
                                                  "LEGATO_DTYPE": "fp16", "LEGATO_GRADIENT_CHECKPOINTING": "1"})
    spec = BackendSpec.from_args(ap.parse_args([]))
    assert spec == BackendSpec("ddpm", "/m", dtype="fp16", gradient_checkpointing=True)
    assert BackendSpec.from_args(ap.parse_args(["--backend", "embedded", "--model-path", "/g"])).kind == "embedded"
    plain = argparse.ArgumentParser()
    add_backend_options(plain)
    assert BackendSpec.from_args(plain.parse_args([])).is_default


# -- studio / app -----------------------------------------------------------------------------------------------------
def test_studio_reports_the_embedded_default_backend(embedded):
    from legato_core.studio import JobQueue, Resources, Studio

    res = Resources(embedded, curve_retained=2)
    studio = Studio(res, JobQueue(1), slider_step=None)
    try:
        assert res.backend_label == studio.backend_label == EMBEDDED_LABEL == "embedded face world (CPU)"
        assert res.face_world and res.image_size == 64
    finally:
        studio.close()


def test_studio_on_a_ddpm_backend_says_so_and_runs_a_job(tiny, tmp_path):
    from legato_core.studio import JobQueue, Resources, Studio, StudioError

    ddpm, pack, photo = tiny
    spec = BackendSpec("ddpm", str(ddpm), insightface_pack=str(pack), device="cpu", num_inference_steps=4)
    backend = spec.load()
    res = Resources(backend, judge=spec.judge(backend), label=spec.label(backend), curve_retained=2)
    assert res.backend_label == f"ddpm from {ddpm} (cpu, fp32)"
    # judged by dlib, never by its own insightface pack
    assert not res.face_world and res.image_size == 16 and res.judge is not backend.identity
    assert res.retained_latents.shape == (4, 3 * 16 * 16)  # drawn from the prior, not inverted face-world faces
    assert res.retained_base.shape == (4, 3, 16, 16)
    studio = Studio(res, JobQueue(1), curve_views=2, slider_step=None)
    try:
        assert studio.backend_label == res.backend_label
        with pytest.raises(StudioError, match="need the embedded backend"):
            studio.add_identity(200_001)
        entry = studio.add_image(photo)
        studio.start_forget(entry.key, steps=1)
        st = studio.wait(120)
        assert st.state == "done", st.text()
        curve = studio.curve(entry.key)
        assert curve["threshold"] == pytest.approx(0.4) and len(curve["t"]) == 9
        before, after = studio.render_rows(entry.key, 1.6)
        assert before.shape == after.shape == (3 + 4, 3, 16, 16)
        assert studio.render_grid(entry.key).width > 0
    finally:
        studio.close()


def test_a_diffusers_backend_without_a_pack_has_no_judge_in_the_app(tiny):
    from legato_core.studio import Resources

    backend = BackendSpec("ddpm", str(tiny[0]), device="cpu", num_inference_steps=2).load()
    assert Resources(backend, curve_retained=1).judge is None  # the curve is skipped, never the embedded judge


def test_app_builds_on_the_flagged_backend_and_shows_it(tiny, capsys):
    pytest.importorskip("gradio")
    import app
    from legato_core import studio as studio_mod
    from legato_core.serving import resources as resources_mod

    def backend_line(demo) -> str:
        return next(b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "backend")

    assert backend_line(app.demo) == f"**Backend:** {EMBEDDED_LABEL}"  # the default page, built at import
    with pytest.raises(SystemExit) as exc:
        app.main(["--backend", "arc2face", "--model-path", "/nowhere/Arc2Face"])  # fails before anything loads
    assert exc.value.code == 2 and "--insightface-pack PATH" in capsys.readouterr().err
    ddpm, pack, _ = tiny
    saved = resources_mod._RESOURCES
    try:
        res = app.load_resources(BackendSpec("ddpm", str(ddpm), insightface_pack=str(pack), device="cpu",
                                             num_inference_steps=2))
        assert studio_mod.get_resources() is res and res.backend_label.startswith("ddpm from ")
        demo = app.build_demo(backend_label=res.backend_label, face_world=res.face_world)
        assert backend_line(demo) == f"**Backend:** {res.backend_label}"
        gallery = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "examples")
        assert not gallery.parent.visible  # face-world examples are hidden for a photo model
    finally:
        resources_mod.set_resources(saved)
