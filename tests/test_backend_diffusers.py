"""diffusers backends on tiny random models: upload -> embed -> forget -> render at t, t = 0 is the base,
adapters save/load, token-wise vector fields, clear errors. The images are noise: only mechanics are checked."""

from __future__ import annotations

import pytest
import torch

from legato_core.adapters import AdapterMismatchError, ODEAdapter, ODEConfig, active
from legato_core.adapters.ode import ConvVectorField, TokenVectorField, make_field, solve
from legato_core.unlearning.engine import ForgetConfig, forget

pytestmark = pytest.mark.usefixtures("one_thread")


# -- token-wise vector field (no diffusers needed) ----------------------------------------------------------------
def test_token_field_is_zero_at_init_and_matches_the_conv_field_per_position():
    tok = TokenVectorField(8, 16)
    x = torch.randn(2, 5, 8)
    assert torch.equal(tok(torch.tensor(0.0), x), torch.zeros_like(x))
    conv = ConvVectorField(8, 16)
    with torch.no_grad():
        for p in conv.parameters():
            p.normal_()
        tok.inp.weight.copy_(conv.inp.weight[:, :, 0, 0])
        tok.inp.bias.copy_(conv.inp.bias)
        tok.out.weight.copy_(conv.out.weight[:, :, 0, 0])
        tok.out.bias.copy_(conv.out.bias)
    img = x.transpose(1, 2)[..., None]  # (B, C, tokens, 1)
    ref = conv(torch.tensor(0.0), img)[..., 0].transpose(1, 2)
    assert torch.allclose(tok(torch.tensor(0.0), x), ref, atol=1e-5)
    out, states = solve(tok, x, 1.6, ODEConfig(), return_states=True)
    assert out.shape == x.shape and len(states) == 5
    with pytest.raises(ValueError, match="unknown adapter site kind"):
        make_field("graph", 8)


def test_site_kinds_are_saved_loaded_and_only_written_when_not_all_conv(tmp_path):
    mixed = ODEAdapter({"a": 4, "b": 6}, ODEConfig(hidden=8), site_kinds={"b": "token"})
    assert isinstance(mixed.fields["a"], ConvVectorField) and isinstance(mixed.fields["b"], TokenVectorField)
    loaded = ODEAdapter.load(mixed.save(tmp_path / "mixed.safetensors"))
    assert loaded.site_kinds == {"a": "conv", "b": "token"} and isinstance(loaded.fields["b"], TokenVectorField)
    plain = ODEAdapter({"a": 4}, ODEConfig(hidden=8))
    assert "site_kinds" not in plain.metadata() and "site_kinds" in mixed.metadata()
    with pytest.raises(ValueError, match="site_kinds names sites"):
        ODEAdapter({"a": 4}, site_kinds={"z": "token"})


# -- fixtures ---------------------------------------------------------------------------------------------------------
def _need(*mods: str) -> None:
    for m in mods:
        pytest.importorskip(m, reason=f"diffusers backend tests need {m} (requirements-backends.txt)")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    _need("diffusers", "transformers", "onnx", "onnxruntime", "insightface")
    from legato_core.backends.insightface_identity import InsightFaceIdentity
    from legato_core.backends.testing import build_tiny_insightface_pack

    return InsightFaceIdentity(build_tiny_insightface_pack(tmp_path_factory.mktemp("pack") / "tiny"),
                               det_size=(128, 128))


@pytest.fixture(scope="module")
def arc2face_paths(tmp_path_factory):
    _need("diffusers", "transformers")
    from legato_core.backends.testing import build_tiny_arc2face

    root = tmp_path_factory.mktemp("arc2face")
    return build_tiny_arc2face(root / "models", root / "sd15"), root / "sd15"


FAST = {"num_inference_steps": 3, "cache_steps": 3, "cache_seeds": 1, "retain_seeds": 2}


def stand_in(identity) -> dict:
    """The tiny pack's recognition model stands in for Arc2Face's arcface.onnx: its hash is the one expected."""
    from legato_core.checksums import file_sha256

    return {"expected_recognition_sha256": file_sha256(identity.recognition_path)}


@pytest.fixture(scope="module")
def arc2face(arc2face_paths, judge):
    from legato_core.backends.registry import load_backend

    models, sd15 = arc2face_paths
    return load_backend("arc2face", model_path=models, base_model_path=sd15, insightface_pack=judge, device="cpu",
                        scheduler="ddim", **FAST, **stand_in(judge))


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    _need("diffusers")
    from legato_core.backends.registry import load_backend
    from legato_core.backends.testing import build_tiny_ddpm

    path = build_tiny_ddpm(tmp_path_factory.mktemp("ddpm") / "ddpm-tiny")
    return load_backend("ddpm", model_path=path, device="cpu", num_inference_steps=8, retain_seeds=2)


def _photo(faces=((1, 1, False),)) -> torch.Tensor:
    from legato_core.backends.testing import tiny_face_photo

    return torch.from_numpy(tiny_face_photo(list(faces))).permute(2, 0, 1).float()[None] / 255


def _upload(backend, faces=((1, 1, True),)):
    """A tiny photo through the upload path (the backend's crop and detector): (PreparedFace, (1, 3, S, S) crop)."""
    from PIL import Image

    from legato_core.backends.testing import tiny_face_photo
    from legato_core.faces import prepare_face

    prepared = prepare_face(Image.fromarray(tiny_face_photo(list(faces))), backend.face_crop())
    return prepared, prepared.image[None]


CFG = {"steps": 3, "lr": 1e-2, "local_views": 1, "adjacency_samples": 1, "preservation_samples": 1}


# -- Arc2Face ---------------------------------------------------------------------------------------------------------
def test_arc2face_satisfies_the_backend_contract(arc2face):
    from legato_core.backends.base import GeneratorBackend

    assert isinstance(arc2face, GeneratorBackend)
    sites = arc2face.adapter_sites
    assert len(sites) == 4 and all(m.adapter_kind == "token" and "attn2" in name for name, m in sites.items())
    assert arc2face.describe()["dtype"] == "torch.float32"
    assert "epsilon-matching only" in arc2face.identity_loss_note
    w = arc2face.sample_latents(3, torch.Generator().manual_seed(0))
    assert torch.allclose(w.norm(dim=1), torch.ones(3))
    assert len(arc2face.weight_hash()) == 16


def test_arc2face_upload_embed_forget_render_at_t(arc2face, judge, tmp_path):
    prepared, photo = _upload(arc2face)
    assert prepared.aligned and photo.shape == (1, 3, 16, 16)
    emb, _ = arc2face.invert(photo)
    assert torch.allclose(emb, judge.embed_aligned(photo)) and torch.allclose(emb.norm(dim=1), torch.ones(1))
    views = arc2face.canonical_views(2)
    base = arc2face.render(emb.expand(2, -1), views)
    assert base.shape == (2, 3, 16, 16) and 0 <= float(base.min()) and float(base.max()) <= 1
    assert torch.equal(arc2face.render(emb.expand(2, -1), views), base), "rendering is deterministic per seed"
    res = forget(arc2face, photo, ForgetConfig(**CFG))
    assert len(res.history) == 3
    assert {"local", "adjacency", "preservation", "trajectory"} <= set(res.history[-1])
    adapter = res.adapter
    with active(arc2face, [(adapter, 0.0)]):
        assert torch.equal(arc2face.render(emb.expand(2, -1), views), base), "t = 0 must be the base exactly"
    with active(arc2face, [(adapter, 1.6)]):
        forgotten = arc2face.render(emb.expand(2, -1), views)
    assert not torch.allclose(forgotten, base)
    path = adapter.save(tmp_path / "forget.safetensors")
    assert torch.equal(arc2face.render(emb.expand(2, -1), views), base), "outside the block: the base"
    loaded = ODEAdapter.load(path, arc2face)
    assert set(loaded.site_kinds.values()) == {"token"}
    with active(arc2face, [(loaded, 1.6)]):
        assert torch.allclose(arc2face.render(emb.expand(2, -1), views), forgotten, atol=1e-6)
    scores = judge.embed(forgotten)  # the judge scores renders (noise here: no face -> zero vectors)
    assert scores.shape == (2, 512)


def test_arc2face_upload_errors_are_clear(arc2face):
    from PIL import Image

    from legato_core.faces import NoFaceError, prepare_face

    with pytest.raises(NoFaceError, match="No face found"):  # a faceless square is refused, never used as it is
        prepare_face(Image.new("RGB", (128, 128)), arc2face.face_crop())
    prepared, _ = _upload(arc2face, [(0, 0, False), (2, 2, True)])
    assert prepared.message.startswith("2 faces found; using the largest") and prepared.used == 0
    assert prepared.faces[0].size == pytest.approx(64, abs=0.5)  # the big (blue) face


def test_adapters_refuse_another_base(arc2face, ddpm):
    res = forget(arc2face, _photo(), ForgetConfig(**{**CFG, "steps": 1}))
    with pytest.raises(AdapterMismatchError):
        with active(ddpm, [(res.adapter, 1.0)]):
            pass


def test_block_sites_gradient_checkpointing_and_identity_loss(arc2face):
    from legato_core.backends.diffusion import Arc2FaceBackend
    from legato_core.backends.insightface_identity import TorchArcFace
    from legato_core.backends.testing import TinyArcFace

    parts = (arc2face.unet, arc2face.text_encoder, arc2face.tokenizer, arc2face.vae, arc2face.scheduler,
             arc2face.identity)
    torch.manual_seed(0)
    arc = TorchArcFace(TinyArcFace())
    kw = {"sites": "blocks", "device": "cpu", **FAST, **stand_in(arc2face.identity)}
    plain = Arc2FaceBackend(*parts, **kw)
    ckpt = Arc2FaceBackend(*parts, gradient_checkpointing=True, **kw)
    ident = Arc2FaceBackend(*parts, arcface_torch=arc, **kw)
    try:
        assert {m.adapter_kind for m in plain.adapter_sites.values()} == {"conv"}
        emb = arc2face.invert(_upload(arc2face)[1])[0]
        cfg = ForgetConfig(**{**CFG, "steps": 2})
        a = forget(plain, emb, cfg).history
        b = forget(ckpt, emb, cfg).history
        for ra, rb in zip(a, b, strict=True):
            assert ra["total"] == pytest.approx(rb["total"], rel=1e-4), "checkpointing must not change the loss"
        assert forget(plain, emb, cfg).history == a, "a run is reproducible from its seed"
        h = forget(ident, emb, ForgetConfig(**{**CFG, "steps": 1})).history
        assert "identity" in h[-1] and torch.isfinite(torch.tensor(h[-1]["identity"]))
        assert "identity loss" in ident.identity_loss_note
    finally:
        arc2face.unet.disable_gradient_checkpointing()


def test_half_precision_runs_adapters_in_the_model_dtype(arc2face_paths, judge):
    from legato_core.backends.diffusion import Arc2FaceBackend

    models, sd15 = arc2face_paths
    be = Arc2FaceBackend.from_pretrained(models, sd15, insightface_pack=judge, device="cpu", dtype="bf16",
                                         scheduler="ddim", **FAST, **stand_in(judge))
    assert be.unet.dtype == torch.bfloat16
    emb = be.sample_latents(1, torch.Generator().manual_seed(0))
    res = forget(be, emb, ForgetConfig(**{**CFG, "steps": 1}))
    adapter = res.adapter
    seen = []
    site = next(iter(be.adapter_sites.values()))
    hook = site.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        assert next(adapter.parameters()).dtype == torch.float32  # master weights stay float32
        with active(be, [(adapter, 1.6)]):
            img = be.render(emb, be.canonical_views(1))
        assert torch.isfinite(img).all() and seen and seen[0] == torch.bfloat16
    finally:
        hook.remove()


def test_a_pack_without_arc2faces_arcface_onnx_is_refused_with_where_to_get_it(arc2face_paths, judge):
    from legato_core.backends.insightface_identity import ARC2FACE_RECOGNITION_SHA256, IdentityPackError
    from legato_core.backends.registry import load_backend

    assert len(ARC2FACE_RECOGNITION_SHA256) == 64 and int(ARC2FACE_RECOGNITION_SHA256, 16)  # pinned, not blank
    models, sd15 = arc2face_paths
    with pytest.raises(IdentityPackError, match=r"rec_tiny.onnx .* is not Arc2Face's arcface.onnx") as err:
        load_backend("arc2face", model_path=models, base_model_path=sd15, insightface_pack=judge, device="cpu")
    assert "arcface.onnx from huggingface.co/FoivosPar/Arc2Face" in str(err.value)
    assert "glintr100.onnx" in str(err.value)  # named as the one to delete, never as an alternative
    with pytest.raises(IdentityPackError, match=r"is not Arc2Face's arcface\.onnx"):  # the escape checks, too
        load_backend("arc2face", model_path=models, base_model_path=sd15, insightface_pack=judge, device="cpu",
                     expected_recognition_sha256="0" * 64)


@pytest.fixture(scope="module")
def blob_identity(tmp_path_factory):
    _need("onnx", "onnxruntime", "insightface")
    from legato_core.backends.insightface_identity import InsightFaceIdentity
    from legato_core.backends.testing import build_tiny_insightface_pack

    pack = build_tiny_insightface_pack(tmp_path_factory.mktemp("blob") / "pack", detector="blob")
    return InsightFaceIdentity(pack, det_size=(256, 256))


def test_tight_crop_and_loose_photo_give_one_detection_and_the_same_embedding(arc2face, blob_identity, monkeypatch):
    from PIL import Image

    from legato_core.backends.diffusion import Arc2FaceBackend
    from legato_core.backends.testing import tiny_blob_photo
    from legato_core.faces import prepare_face

    parts = (arc2face.unet, arc2face.text_encoder, arc2face.tokenizer, arc2face.vae, arc2face.scheduler)
    be = Arc2FaceBackend(*parts, blob_identity, device="cpu", height=128, width=128, **FAST,
                         **stand_in(blob_identity))
    calls = []
    detect = blob_identity.app.det_model.detect
    monkeypatch.setattr(blob_identity.app.det_model, "detect", lambda *a, **k: calls.append(1) or detect(*a, **k))
    loose = tiny_blob_photo((320, 256), (80, 64, 176, 160), seed=3)  # the face fills 30 % of the width
    tight = loose[40:184, 56:200]  # the same face filling two thirds of a 144-px crop
    emb = {}
    for name, photo in (("loose", loose), ("tight", tight)):
        calls.clear()
        face = prepare_face(Image.fromarray(photo), be.face_crop())
        emb[name] = be.invert(face.image[None])[0][0]
        assert face.aligned and face.image.shape == (3, 128, 128)
        assert len(calls) == 1, "one detection per upload, on the original photo"
    other = prepare_face(Image.fromarray(tiny_blob_photo((320, 256), (80, 64, 176, 160), seed=4)), be.face_crop())
    cos_other = float(emb["loose"] @ be.invert(other.image[None])[0][0])
    assert float(emb["loose"] @ emb["tight"]) > 0.99 > cos_other + 0.05
    # and the crop's embedding is insightface's own (norm_crop on the original photo) within resampling error
    assert float(emb["loose"] @ blob_identity.embed_photo(loose).embedding) > 0.98


def test_same_seed_gives_the_diffusers_pipeline_image(arc2face):
    from diffusers import StableDiffusionPipeline

    emb = arc2face.sample_latents(1, torch.Generator().manual_seed(5))
    ours = arc2face.render(emb, torch.tensor([[7.0]]))
    pipe = StableDiffusionPipeline(vae=arc2face.vae, text_encoder=arc2face.text_encoder, tokenizer=arc2face.tokenizer,
                                   unet=arc2face.unet, scheduler=type(arc2face.scheduler).from_config(
                                       arc2face.scheduler.config), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt_embeds=arc2face.encode_condition(emb), guidance_scale=arc2face.guidance_scale,
                  num_inference_steps=arc2face.num_inference_steps, height=16, width=16, output_type="pt",
                  generator=torch.Generator(arc2face.device).manual_seed(7)).images  # as Arc2Face's demo calls it
    assert theirs.shape == ours.shape == (1, 3, 16, 16)
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
    assert not torch.allclose(ours, arc2face.render(emb, torch.tensor([[8.0]])), atol=1e-3)


def test_loading_errors_name_the_missing_folder(tmp_path, arc2face_paths):
    from legato_core.backends.registry import load_backend

    models, _ = arc2face_paths
    with pytest.raises(FileNotFoundError, match="Arc2Face model folder not found"):
        load_backend("arc2face", model_path=tmp_path / "nope", insightface_pack=tmp_path)
    with pytest.raises(FileNotFoundError, match="VAE"):
        load_backend("arc2face", model_path=models, insightface_pack=tmp_path, device="cpu")  # no base model
    with pytest.raises(ValueError, match="insightface_pack"):
        load_backend("arc2face", model_path=models)
    with pytest.raises(FileNotFoundError, match="DDPM model folder not found"):
        load_backend("ddpm", model_path=tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend("stylegan", model_path=models)


# -- DDPM -----------------------------------------------------------------------------------------------------------
def test_ddpm_invert_forget_render_at_t(ddpm, tmp_path):
    assert {m.adapter_kind for m in ddpm.adapter_sites.values()} == {"conv"}
    img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x_t, view = ddpm.invert(img)
    assert x_t.shape == (1, 3 * 16 * 16) and torch.equal(view, torch.zeros(1, 1))
    base = ddpm.render(x_t, view)
    assert (base - img).square().mean() < 5e-3, "DDIM inversion round-trips (near-zero tiny predictor)"
    res = forget(ddpm, img, ForgetConfig(**CFG))
    assert {"local", "adjacency", "preservation"} <= set(res.history[-1])
    adapter = res.adapter
    with active(ddpm, [(adapter, 0.0)]):
        assert torch.equal(ddpm.render(x_t, view), base)
    with active(ddpm, [(adapter, 0.8)]):
        half = ddpm.render(x_t, view)
    with active(ddpm, [(adapter, 1.6)]):
        full = ddpm.render(x_t, view)
    assert not torch.allclose(full, base) and not torch.allclose(half, full)
    path = adapter.save(tmp_path / "ddpm.safetensors")
    loaded = ODEAdapter.load(path, ddpm)
    with active(ddpm, [(loaded, 1.6)]):
        assert torch.allclose(ddpm.render(x_t, view), full, atol=1e-6)


def test_ddpm_rejects_cross_attention_sites(tmp_path):
    _need("diffusers")
    from legato_core.backends.diffusion import DDPMBackend
    from legato_core.backends.testing import build_tiny_ddpm

    path = build_tiny_ddpm(tmp_path / "d")
    with pytest.raises(ValueError, match="no cross-attention"):
        DDPMBackend.from_pretrained(path, device="cpu", sites="attn2")
