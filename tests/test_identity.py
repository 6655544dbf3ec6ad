"""The shipped identity networks: unit embeddings, differentiable, same person across views, and separate."""

import pytest
import torch

from legato_core import faceworld
from legato_core.identity import IdentityModel, load_identity_model
from legato_core.identity.verification import roc_auc, threshold_at_far, verification_report


@pytest.fixture(scope="module", params=["arcface", "judge"])
def model(request):
    return load_identity_model(request.param)


@pytest.fixture(scope="module")
def dev_faces():
    ids = [200_000 + i for i in range(20) for _ in range(4)]
    views = [v for _ in range(20) for v in range(4)]
    return faceworld.render(ids, views), torch.arange(20).repeat_interleave(4)


def test_embeddings_are_unit_vectors(model, dev_faces):
    e = model.embed(dev_faces[0][:8])
    assert e.shape == (8, 128)
    assert torch.allclose(e.norm(dim=1), torch.ones(8), atol=1e-5)


def test_same_identity_in_different_views_is_above_threshold(model, dev_faces):
    rep = verification_report(model.embed(dev_faces[0]), dev_faces[1], threshold=model.threshold)
    assert rep["tar_at_threshold"] >= 0.95
    assert rep["far_at_threshold"] <= 0.01


def test_arcface_is_differentiable_for_identity_losses():
    arc = load_identity_model("arcface")
    x = faceworld.render([200_001], 0).requires_grad_(True)
    arc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_judge_and_arcface_are_different_networks():
    arc, judge = load_identity_model("arcface"), load_identity_model("judge")
    assert type(arc.net) is not type(judge.net)


def test_thresholds_are_calibrated_values_not_defaults():
    for name in ("arcface", "judge"):
        thr = load_identity_model(name).threshold
        assert 0.0 < thr < 0.95 and thr != 0.5


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown identity architecture"):
        IdentityModel("vgg")


def test_verification_metrics_on_known_scores():
    import numpy as np

    genuine, impostor = np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.75])
    assert roc_auc(genuine, impostor) == pytest.approx(8 / 9)
    assert threshold_at_far(np.linspace(0, 1, 1001), 1e-2) == pytest.approx(0.99, abs=1e-3)


def test_sensitivity_table_has_a_row_per_factor_and_brackets_them_with_references():
    from legato_core.faceworld import IDENTITY_KEYS
    from legato_core.identity import load_identity_model
    from legato_core.identity.sensitivity import factor_sensitivity

    rows = factor_sensitivity(load_identity_model("judge"), list(range(300_000, 300_024)))
    by = {r["factor"]: r for r in rows}
    assert [r["factor"] for r in rows[:len(IDENTITY_KEYS)]] == list(IDENTITY_KEYS)
    assert by["mole_x"]["faces"] < 24  # measured only on faces that have a mole
    other_person = by["(reference) another person, same view"]["mean_cosine"]
    assert other_person < 0.3
    # every single-factor change keeps the face closer to itself than another person is
    assert all(r["mean_cosine"] > other_person for r in rows[:len(IDENTITY_KEYS)])
    # the judge sees a new skin tone far more than a new nose width
    assert by["skin"]["mean_cosine"] < by["nose_w"]["mean_cosine"] - 0.2
