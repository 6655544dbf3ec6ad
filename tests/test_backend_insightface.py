"""insightface identity backend on a tiny ONNX pack: detect, align, embed, largest face, clear errors, no download."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="insightface backend tests need onnx (requirements-backends.txt)")
pytest.importorskip("onnxruntime", reason="insightface backend tests need onnxruntime (requirements-backends.txt)")
pytest.importorskip("insightface", reason="insightface backend tests need insightface (requirements-backends.txt)")

from legato_core.backends.insightface_identity import (
    FaceNotFoundError,
    IdentityPackError,
    InsightFaceIdentity,
    MultipleFacesError,
    MultipleFacesWarning,
    TorchArcFace,
    align_faces,
    load_torch_arcface,
)
from legato_core.backends.registry import load_identity_backend
from legato_core.backends.testing import TinyArcFace, build_tiny_insightface_pack, tiny_face_photo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return build_tiny_insightface_pack(tmp_path_factory.mktemp("insightface") / "models" / "tinypack")


@pytest.fixture(scope="module")
def judge(pack):
    return InsightFaceIdentity(pack, det_size=(128, 128))


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    """insightface must never be asked to fetch a pack: fail loudly if it tries."""
    import insightface.utils.storage as storage

    def refuse(*_a, **_k):
        raise AssertionError("insightface tried to download a model pack")

    monkeypatch.setattr(storage, "download_file", refuse, raising=False)
    monkeypatch.setattr(storage, "ensure_available", refuse, raising=False)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def test_pack_loads_detector_and_recognizer(judge):
    assert judge.detection_file == "det_tiny.onnx" and judge.recognition_file == "rec_tiny.onnx"
    assert "det_tiny.onnx" in judge.describe() and "no gradients" in judge.describe()
    assert judge.differentiable is False


def test_one_face_gives_a_unit_embedding_and_its_box(judge):
    res = judge.embed_photo(tiny_face_photo([(1, 1, False)]))
    assert res.n_faces == 1 and res.message == ""
    assert res.embedding.shape == (512,) and abs(float(res.embedding.norm()) - 1) < 1e-5
    np.testing.assert_allclose(res.bbox, (32, 32, 64, 64), atol=1)
    assert res.kps.shape == (5, 2)
    # PIL images, float arrays and (3, H, W) tensors are the same photo
    again = judge.embed_photo(_tensor(tiny_face_photo([(1, 1, False)])))
    assert torch.allclose(again.embedding, res.embedding, atol=1e-5)


def test_several_faces_use_the_largest_and_say_which(judge):
    photo = tiny_face_photo([(0, 0, False), (2, 2, True)])
    with pytest.warns(MultipleFacesWarning, match=r"found 2 faces; used the largest at box \(64, 64, 128, 128\)"):
        res = judge.embed_photo(photo)
    assert res.n_faces == 2 and len(res.others) == 1
    np.testing.assert_allclose(res.bbox, (64, 64, 128, 128), atol=1)
    with pytest.raises(MultipleFacesError, match="used the largest"):
        judge.embed_photo(photo, multiple="error")


def test_no_face_is_a_clear_error(judge):
    with pytest.raises(FaceNotFoundError, match="no face found"):
        judge.embed_photo(np.zeros((128, 128, 3), np.uint8))


def test_judge_embed_batches_and_scores_faceless_images_zero(judge):
    imgs = torch.stack([_tensor(tiny_face_photo([(1, 1, False)])), torch.zeros(3, 128, 128)])
    e = judge.embed(imgs)
    assert e.shape == (2, 512) and judge.last_missing == 1
    assert abs(float(e[0].norm()) - 1) < 1e-5 and float(e[1].abs().sum()) == 0
    with pytest.raises(FaceNotFoundError):
        judge.embed(imgs, missing="raise")


def test_missing_or_broken_packs_are_explained_without_downloading(tmp_path):
    with pytest.raises(IdentityPackError, match="pack folder not found"):
        InsightFaceIdentity(tmp_path / "antelopev2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IdentityPackError, match=r"no \.onnx files"):
        InsightFaceIdentity(tmp_path / "empty")
    rec_only = build_tiny_insightface_pack(tmp_path / "rec_only", with_detector=False)
    with pytest.raises(IdentityPackError, match="no face detector"):
        InsightFaceIdentity(rec_only)
    det_only = build_tiny_insightface_pack(tmp_path / "det_only", with_recognizer=False)
    with pytest.raises(IdentityPackError, match="no recognition model"):
        InsightFaceIdentity(det_only)


def test_a_pack_unzipped_into_its_own_folder_is_found(tmp_path):
    build_tiny_insightface_pack(tmp_path / "antelopev2" / "antelopev2")
    ident = InsightFaceIdentity(tmp_path / "antelopev2", det_size=(128, 128))
    assert ident.pack_dir.name == "antelopev2" and ident.pack_dir.parent.name == "antelopev2"
    assert any("nested" in n for n in ident.notes)


def test_differentiable_alignment_matches_insightface_crop(judge):
    from insightface.utils import face_align

    photo = tiny_face_photo([(1, 1, True)], seed=3)
    kps = judge.embed_photo(photo).kps
    ref = face_align.norm_crop(photo, kps, 112).astype(np.float32) / 255  # RGB in, RGB out
    ours = align_faces(_tensor(photo)[None], [kps])[0].permute(1, 2, 0).numpy()
    inner = (slice(8, 104), slice(8, 104))  # borders differ only by interpolation at the image edge
    assert np.abs(ours[inner] - ref[inner]).mean() < 0.005


def test_torch_arcface_reproduces_the_onnx_embedding_and_has_gradients(judge, tmp_path):
    torch.manual_seed(0)  # the same weights build_tiny_insightface_pack exported
    net = TinyArcFace().eval()
    arc = TorchArcFace(net)
    photo = tiny_face_photo([(1, 1, True)], seed=3)
    res = judge.embed_photo(photo)
    x = _tensor(photo)[None].requires_grad_(True)
    e = arc(x, [res.kps])
    # same alignment and input convention as insightface (RGB, (x - 127.5) / 127.5): the same embedding
    assert float((e[0].detach() * res.embedding).sum()) > 0.999
    assert float((arc(x.detach())[0] * res.embedding).sum()) < 0.99  # and the alignment matters
    e.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    path = tmp_path / "arcface.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 112, 112)), str(path))
    loaded = load_identity_backend("torch-arcface", path)
    assert torch.allclose(loaded(x.detach(), [res.kps]), e.detach(), atol=1e-5)
    ep = torch.export.export(net, (torch.zeros(2, 3, 112, 112),), dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(ep, str(tmp_path / "arcface.pt2"))
    exported = load_torch_arcface(tmp_path / "arcface.pt2")
    assert torch.allclose(exported(x.detach(), [res.kps]), e.detach(), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        load_torch_arcface(tmp_path / "missing.pt")


def test_registry_builds_the_insightface_judge(pack):
    ident = load_identity_backend("insightface", pack, det_size=(128, 128))
    assert isinstance(ident, InsightFaceIdentity)
    with pytest.raises(ValueError, match="unknown identity backend"):
        load_identity_backend("facenet", pack)
