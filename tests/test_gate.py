"""Robust mode's identity gate: every latent the base model draws as the person follows the person's path to
their substitute, the person's own dial is unchanged, nobody else is touched, and an attacker inside the gate
gets no gradient on the latent."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from legato_core import faceworld
from legato_core.adapters import AdapterMismatchError, ODEAdapter, ODEConfig, active
from legato_core.adapters.gate import IdentityGate
from legato_core.adapters.scope import Scope
from legato_core.attacks import AttackConfig, attack_suite
from legato_core.identity.model import load_identity_model
from legato_core.metrics import AdapterKnob
from legato_core.unlearning.engine import ForgetConfig, train_adapter
from legato_core.unlearning.robust import RobustConfig, make_gate
from legato_core.unlearning.targets import TargetConfig

PERSON = 200_047  # a development id: unit tests never touch evaluation ids
T = 1.6


@pytest.fixture(scope="module")
def world():
    from legato_core.backends.embedded import EmbeddedFaceBackend

    torch.set_num_threads(1)
    backend = EmbeddedFaceBackend.from_pretrained()
    photo = faceworld.render([PERSON], 0)
    w, v = backend.invert(photo)
    return backend, photo, (w, v)


def _field_adapter(backend) -> ODEAdapter:
    """A latent adapter with a random, non-zero field (a stand-in for a trained one)."""
    adapter = ODEAdapter.for_model(backend, ["w"], ODEConfig(hidden=16))
    with torch.no_grad():
        adapter.fields["w"].out.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(3))
        adapter.fields["w"].out.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    return adapter


def _gated(backend, w, threshold=0.5) -> tuple[ODEAdapter, ODEAdapter]:
    plain = _field_adapter(backend)
    gated = copy.deepcopy(plain)
    centres = torch.nn.functional.normalize(backend.latent_identity(w, 2).mean(1), dim=1)
    gated.set_gate(IdentityGate(centres, w, threshold))
    return plain, gated


def _latents_at(backend, adapter, w, t):
    """The identity latent synthesis reads under ``adapter`` at ``t`` (what the "w" site passes on)."""
    seen = []
    site = backend.adapter_sites["w"]
    handle = site.register_forward_hook(lambda m, i, o: seen.append(o))  # after the adapter's own hook
    try:
        with active(backend, [(adapter, t)]):
            backend.render(w, backend.canonical_views(len(w)))
    finally:
        handle.remove()
    return seen[-1]


def test_the_persons_own_dial_is_the_fields_path_bit_for_bit(world):
    backend, _, (w, _) = world
    plain, gated = _gated(backend, w)
    for t in (0.4, 1.0, T):
        assert torch.equal(_latents_at(backend, gated, w, t), _latents_at(backend, plain, w, t))


def test_a_held_latent_ends_where_the_person_ends_and_the_attacker_gets_no_gradient(world):
    backend, _, (w, _) = world
    _, gated = _gated(backend, w)
    nearby = w + 0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    assert gated.gate.holds(backend.latent_identity(nearby, 2)).all()  # the same person, by the loss network
    end = _latents_at(backend, gated, w, T)
    assert torch.allclose(_latents_at(backend, gated, nearby, T), end, atol=1e-6)
    x = nearby.clone().requires_grad_(True)
    with active(backend, [(gated, T)]):
        backend.render(x, backend.canonical_views(1)).sum().backward()
    assert x.grad.abs().max() < 1e-6  # inside the gate, re-inversion cannot move the latent


def test_latents_the_base_draws_as_someone_else_are_left_to_the_field(world):
    backend, _, (w, _) = world
    plain, gated = _gated(backend, w, threshold=0.9)
    others = backend.sample_latents(16, torch.Generator().manual_seed(2))
    held = gated.gate.holds(backend.latent_identity(others, 2))
    assert not held.all()
    out, ref = _latents_at(backend, gated, others, T), _latents_at(backend, plain, others, T)
    assert torch.equal(out[~held], ref[~held])


def test_a_gate_is_saved_and_restored_with_its_adapter(world, tmp_path):
    backend, _, (w, _) = world
    _, gated = _gated(backend, w, threshold=0.61)
    gated.set_scope(Scope(w, 0.5, 1.0))  # its centres and the gate's anchor may be one tensor in memory
    loaded = ODEAdapter.load(gated.save(tmp_path / "a.safetensors"), backend)
    assert loaded.gate.threshold == 0.61 and loaded.gate.views == 2
    assert torch.equal(loaded.gate.centres, gated.gate.centres) and torch.equal(loaded.gate.anchor, w)
    assert loaded.digest() == gated.digest()  # the dial's binding is to the fields alone
    probe = backend.sample_latents(4, torch.Generator().manual_seed(5))
    assert torch.equal(_latents_at(backend, loaded, probe, T), _latents_at(backend, gated, probe, T))


def test_a_file_with_half_a_gate_is_refused(world, tmp_path):
    backend, _, (w, _) = world
    _, gated = _gated(backend, w)
    from safetensors.torch import save_file

    tensors = gated.tensors()
    del tensors["gate.anchor"]
    save_file(tensors, tmp_path / "half.safetensors", metadata=gated.metadata())
    with pytest.raises(ValueError, match="part of an identity gate"):
        ODEAdapter.load(tmp_path / "half.safetensors")


def test_a_gated_adapter_needs_a_model_that_reads_identities(world, tiny_backend):
    backend, _, (w, _) = world
    _, gated = _gated(backend, w)
    with pytest.raises(RuntimeError, match=r"adapters\.active"):
        gated.transform("w", w, T)  # run by hand, with no model bound
    with pytest.raises(AdapterMismatchError, match="latent_identity"):
        gated.bind(tiny_backend)


def test_gate_values_are_checked():
    unit = torch.full((1, 4), 0.5)
    with pytest.raises(ValueError, match="cosine"):
        IdentityGate(unit, torch.zeros(1, 3), 1.5)
    with pytest.raises(ValueError, match="anchor"):
        IdentityGate(unit, torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="unit"):
        IdentityGate(torch.ones(1, 4), torch.zeros(1, 3), 0.5)
    with pytest.raises(ValueError, match="views"):
        RobustConfig(views=0)


def test_the_threshold_holds_the_person_and_few_random_people(world):
    backend, _, (w, _) = world
    anchors = w + 0.02 * torch.randn(3, w.shape[1], generator=torch.Generator().manual_seed(6))  # |d| ~ 0.3
    gate, info = make_gate(backend, torch.cat([w, anchors]), RobustConfig(bank=256))
    assert not info["squeezed"] and info["threshold"] == pytest.approx(info["bank_quantile"] + 0.05)
    assert info["bank_quantile"] < info["threshold"] < info["own_min"] and info["held_in_bank"] <= 0.01
    assert gate.holds(backend.latent_identity(torch.cat([w, anchors]), 2)).all()
    fresh = backend.sample_latents(256, torch.Generator().manual_seed(99))  # not the bank's latents
    assert gate.holds(backend.latent_identity(fresh, 2)).float().mean() <= 0.03


def test_robust_mode_is_a_config_option_and_refuses_runs_without_a_latent_site(world):
    backend, _, (w, _) = world
    cfg = ForgetConfig().merged({"robust": {"bank": 64}})
    assert cfg.robust == RobustConfig(bank=64) and ForgetConfig().robust is None
    assert ForgetConfig.from_dict(cfg.to_dict()).robust == cfg.robust
    conv_only = ForgetConfig(steps=1, sites=["b16"], robust=RobustConfig())
    with pytest.raises(ValueError, match="latent site"):
        train_adapter(backend, w, conv_only)


@pytest.mark.slow
def test_a_robust_adapter_holds_against_re_inversion_where_the_default_does_not(world):
    backend, photo, original = world
    judge = load_identity_model("judge")
    cfg = ForgetConfig(steps=60, calibration=None, view_anchors=2)
    reports = {}
    for mode, robust in (("default", None), ("robust", RobustConfig(bank=256))):
        adapter = train_adapter(backend, original[0], dataclasses.replace(cfg, robust=robust)).adapter
        reports[mode] = attack_suite(AdapterKnob(backend, [adapter]), T, photo, original, judge,
                                     config=AttackConfig(steps=40, check_every=10))["attacks"]
    assert not reports["default"]["reinvert"]["held"]
    assert reports["robust"]["reinvert"]["held"] and reports["robust"]["warm_start"]["held"]


def test_the_gate_reads_each_latent_once_whatever_t_the_slider_asks_for(world, monkeypatch):
    backend, _, (w, _) = world
    _, gated = _gated(backend, w)
    calls = []
    reader = backend.latent_identity
    monkeypatch.setattr(backend, "latent_identity", lambda x, views: calls.append(len(x)) or reader(x, views))
    probe = torch.cat([w, backend.sample_latents(3, torch.Generator().manual_seed(8))])
    first = _latents_at(backend, gated, probe, 0.8)
    _latents_at(backend, gated, probe, T)
    assert torch.equal(_latents_at(backend, gated, probe, 0.8), first)
    assert calls == [4]  # one read of the 4 latents, then answers from memory


def test_a_robust_dial_runs_the_whole_knob_because_its_gate_completes_only_there(world, monkeypatch):
    from legato_core.adapters.dial import DialMap
    from legato_core.unlearning import engine

    backend, _, (w, _) = world
    asked = []

    def measured(backend, adapter, person, config):  # what the engine asks the calibration for
        asked.append(config.end_at_floor)
        return DialMap((0.0, adapter.config.t_max), "test", adapter.digest())

    monkeypatch.setattr(engine, "calibrate_dial", measured)
    quick = ForgetConfig(steps=1, view_anchors=1, adjacency_samples=1, target=TargetConfig(kind="extrapolated"))
    for robust in (None, RobustConfig(bank=64)):
        train_adapter(backend, w, dataclasses.replace(quick, robust=robust))
    assert asked == [True, False]  # the default dial ends at the floor; a robust one runs to t_end
