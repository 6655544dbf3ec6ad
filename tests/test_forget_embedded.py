"""A short LEGATO run on the embedded default forgets the target and keeps everyone else."""

import pytest
import torch

from legato_core import faceworld, forget
from legato_core.adapters import active
from legato_core.metrics import AdapterKnob, identity_similarity, unlearning_report
from legato_core.unlearning import ForgetConfig


@pytest.fixture(scope="module")
def trained(embedded):
    img = faceworld.render([200_020], 0)
    res = forget(embedded, img, ForgetConfig(steps=40, seed=0))
    return embedded, res


def test_short_run_lowers_id_target_and_keeps_retention(trained):
    backend, res = trained
    knob = AdapterKnob(backend, [res.adapter])
    rep = unlearning_report(backend, knob, res.latent[:1], res.config.ode.t_end, n_retain=60, n_fd=60, n_views=4)
    assert rep["curve"][0][1] == pytest.approx(1.0, abs=1e-5), "t = 0 must be the base model"
    assert rep["id_target"] < rep["curve"][0][1] - 0.3
    assert rep["retention_mean"] > 0.8  # a 40-step run; the 140-step default is measured in docs/engine.md
    assert rep["trainable_fraction"] < 0.5


def test_adapter_at_zero_renders_the_base_exactly(trained):
    backend, res = trained
    v = backend.canonical_views(3)
    w = res.latent[:1].expand(3, -1)
    base = backend.render(w, v)
    with active(backend, [(res.adapter, 0.0)]):
        assert torch.equal(backend.render(w, v), base)
    with active(backend, [(res.adapter, res.config.ode.t_end)]):
        assert not torch.equal(backend.render(w, v), base)
    assert torch.equal(backend.render(w, v), base)


def test_intermediate_t_forgets_partially(trained):
    backend, res = trained
    knob = AdapterKnob(backend, [res.adapter])
    v = backend.canonical_views(4)
    sims = [float(identity_similarity(knob, res.latent[:1], v, t)) for t in (0.0, 0.8, 1.6)]
    assert sims[0] > sims[1] > sims[2]


def test_the_embedded_default_trains_the_identity_latent_and_calibrates_the_dial(trained):
    backend, res = trained
    assert backend.forget_sites == ["w"] and {"b8", "b16", "b32", "b64"} <= set(backend.adapter_sites)
    assert list(res.adapter.fields) == ["w"] and res.adapter.site_kinds == {"w": "latent"}
    assert res.adapter.trainable_parameters() < 0.02 * backend.parameter_count()
    dial = res.adapter.dial
    assert dial is not None and dial.adapter_digest == res.adapter.digest()
    # the slider ends where arcface first calls the face unrelated, at the latest at t_max
    assert res.adapter.t_at(0) == 0 and 0 < res.adapter.t_at(1) == dial.t[-1] <= res.config.ode.t_max


def test_the_forgotten_person_becomes_a_prior_face(trained):
    backend, res = trained
    assert res.adapter.description["target"]["kind"] == "substitute"
    cfg = res.config.target
    pool = backend.sample_latents(cfg.pool_size, torch.Generator().manual_seed(cfg.pool_seed))
    assert any(torch.equal(res.target_latent[0], p) for p in pool)
