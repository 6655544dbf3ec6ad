"""The dial: measures of a knob along its positions, the calibrated map u -> t stored with the adapter, the latent
adapter site whose every render is one the generator draws, and the substitute target."""

import itertools

import numpy as np
import pytest
import torch

from legato_core.adapters import AdapterMismatchError, ODEAdapter, ODEConfig, active
from legato_core.adapters.dial import DialMap
from legato_core.adapters.ode import solve
from legato_core.generator.modeling import ModulatedConv
from legato_core.metrics import AdapterKnob, dial_report, evenness, is_monotone, sharpness, step_evenness
from legato_core.unlearning.calibration import CalibrationConfig, KnobProfile, calibrate_dial, invert, knob_knots
from legato_core.unlearning.targets import TargetConfig, make_target


@pytest.fixture
def varied_backend(tiny_backend):
    """The tiny backend with random style weights: its renders depend on the latent (at init they do not)."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for m in tiny_backend.generator.modules():
            if isinstance(m, ModulatedConv):
                m.affine.weight.copy_(torch.randn(m.affine.weight.shape, generator=g) * 0.3)
    return tiny_backend


def _randomise(adapter, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return adapter


# -- measures --------------------------------------------------------------------------------------------------


def test_evenness_is_one_for_equal_drops_and_the_number_of_steps_for_a_switch():
    assert evenness(list(np.linspace(1, 0, 17))) == pytest.approx(1.0)
    switch = [1.0] * 16 + [0.0]
    assert evenness(switch) == pytest.approx(16.0)
    assert evenness([0.5] * 17) == float("inf")  # no dial at all


def test_step_evenness_and_monotone_tolerance():
    assert step_evenness([0.1] * 16) == pytest.approx(1.0)
    assert step_evenness([0.0] * 15 + [1.6]) == pytest.approx(16.0)
    assert is_monotone([1.0, 0.5, 0.505, 0.2])  # a rise of 0.005 is within 0.01
    assert not is_monotone([1.0, 0.5, 0.52, 0.2])


def test_sharpness_falls_when_a_face_is_blurred():
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(2, 3, 32, 32, generator=g) > 0.5).float()
    blurred = torch.nn.functional.avg_pool2d(img, 3, stride=1, padding=1)
    assert (sharpness(blurred) < 0.5 * sharpness(img)).all()


def test_dial_report_measures_every_position_and_the_reach(varied_backend):
    tiny_backend = varied_backend
    adapter = _randomise(ODEAdapter.for_model(tiny_backend, ["w"], ODEConfig(hidden=8)), scale=0.2)
    w = tiny_backend.sample_latents(2, torch.Generator().manual_seed(5))
    rep = dial_report(tiny_backend, AdapterKnob(tiny_backend, [adapter]), w[:1], w[1:], adapter.t_at,
                      tiny_backend.canonical_views(2), tiny_backend.loss_identity_model(), manifold_positions=())
    assert len(rep["judge_curve"]) == 17 and len(rep["pixel_steps"]) == 16
    assert rep["judge_curve"][0] == pytest.approx(1.0, abs=1e-5)  # u = 0 is the original
    assert rep["knob"][0] == 0 and rep["knob"][-1] == pytest.approx(1.6)
    assert rep["sharpness"][0] == pytest.approx(1.0) or rep["sharpness"][0] > 1.0  # against the softer reference
    assert np.isfinite(rep["reach_db"]) and rep["manifold_db"] == {}


# -- the map u -> t ---------------------------------------------------------------------------------------------


def test_dial_map_interpolates_and_refuses_what_is_not_a_map():
    m = DialMap((0.0, 1.2, 1.6), "test", "abc")
    assert m.t_at(0) == 0 and m.t_at(0.5) == pytest.approx(1.2) and m.t_at(0.75) == pytest.approx(1.4)
    assert m.t_at(1) == pytest.approx(1.6)
    with pytest.raises(ValueError, match="u must be in"):
        m.t_at(1.5)
    with pytest.raises(ValueError, match="never decreases"):
        DialMap((0.0, 1.0, 0.8), "test", "abc")
    with pytest.raises(ValueError, match="starts at t = 0"):
        DialMap((0.1, 1.0), "test", "abc")


def test_without_a_map_the_slider_is_the_raw_knob(tiny_backend):
    adapter = ODEAdapter.for_model(tiny_backend, ["w"], ODEConfig(hidden=8))
    assert adapter.dial is None
    assert adapter.t_at(0.25) == pytest.approx(0.4) and adapter.t_at(1) == pytest.approx(1.6)


def test_the_map_is_saved_with_the_adapter_and_tied_to_its_weights(tiny_backend, tmp_path):
    adapter = _randomise(ODEAdapter.for_model(tiny_backend, ["w", "b8"], ODEConfig(hidden=8)))
    dial = DialMap((0.0, 0.2, 1.6), "test", adapter.digest())
    adapter.set_dial(dial)
    loaded = ODEAdapter.load(adapter.save(tmp_path / "a.safetensors"), tiny_backend)
    assert loaded.dial == dial and loaded.t_at(0.25) == pytest.approx(0.1)
    other = _randomise(ODEAdapter.for_model(tiny_backend, ["w", "b8"], ODEConfig(hidden=8)), seed=1)
    with pytest.raises(AdapterMismatchError, match="measured on adapter"):
        other.set_dial(dial)
    # a file whose weights were swapped under its map is refused on load
    other.dial = dial
    with pytest.raises(AdapterMismatchError, match="measured on adapter"):
        ODEAdapter.load(other.save(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="must end at t_max"):
        adapter.set_dial(DialMap((0.0, 1.0), "test", adapter.digest()))


def test_inverting_a_flat_then_falling_curve_spends_the_slider_where_the_change_is():
    values = list(np.linspace(0, 1.6, 65))
    falls_late = np.clip((np.linspace(0, 1, 65) - 0.5) / 0.5, 0, 1)  # nothing happens below t = 0.8
    knots = invert(values, falls_late, 33)
    assert knots[0] == 0 and knots[-1] == pytest.approx(1.6)
    assert knots[16] == pytest.approx(1.2, abs=1e-6)  # half way along the slider = half the fall
    assert all(b >= a for a, b in itertools.pairwise(knots))


def test_calibration_balances_identity_against_pixels():
    values = list(np.linspace(0, 1.6, 65))
    identity = np.clip((np.linspace(0, 1, 65) - 0.4) / 0.6, 0, 1)
    pixels = np.linspace(0, 1, 65)
    knots, b = knob_knots(KnobProfile(values, [], identity, pixels))
    assert 0 < b < 1  # neither alone: identity-only would freeze the pixels for 40 % of the slider
    us = np.linspace(0, 1, 17)
    ts = np.interp(us, np.linspace(0, 1, len(knots)), knots)
    uneven = {}
    for name, fraction in (("identity", identity), ("pixels", pixels)):
        steps = np.diff(np.interp(ts, values, fraction))
        uneven[name] = steps.max() / steps.mean()
    # identity-only would jump 40 % of the pixel path in the first step (unevenness ~7); pixels-only the same for
    # identity: the blend keeps both near even, pixels within their tolerance of identity
    assert uneven["identity"] < 1.5 and uneven["pixels"] < 2.0


def test_calibrate_dial_measures_the_adapter_and_attaches(varied_backend):
    tiny_backend = varied_backend
    adapter = _randomise(ODEAdapter.for_model(tiny_backend, ["w"], ODEConfig(hidden=8)), scale=0.2)
    w = tiny_backend.sample_latents(1, torch.Generator().manual_seed(2))
    dial = calibrate_dial(tiny_backend, adapter, w, CalibrationConfig(grid=9, knots=5, views=2))
    adapter.set_dial(dial)
    assert len(dial.t) == 5 and dial.t[0] == 0 and dial.t[-1] == pytest.approx(1.6)
    assert "loss network" in dial.measured_by


# -- where identity enters -------------------------------------------------------------------------------------


def test_a_latent_site_adapter_renders_a_latent_the_base_generator_draws(varied_backend):
    tiny_backend = varied_backend
    adapter = _randomise(ODEAdapter.for_model(tiny_backend, ["w"], ODEConfig(hidden=8)), scale=0.2)
    assert adapter.site_kinds == {"w": "latent"}
    g = torch.Generator().manual_seed(4)
    w, v = tiny_backend.sample_latents(3, g), tiny_backend.sample_views(3, g)
    with torch.no_grad():
        moved = solve(adapter.fields["w"], w, 0.8, adapter.config)
        with active(tiny_backend, [(adapter, 0.8)]):
            adapted = tiny_backend.render(w, v)
        assert not torch.allclose(moved, w)
        assert not torch.allclose(adapted, tiny_backend.render(w, v), atol=1e-3)
        torch.testing.assert_close(adapted, tiny_backend.render(moved, v), rtol=1e-5, atol=1e-6)


class _ColourIdentity:
    """A stand-in loss network whose embedding is the image's centred pixels: different faces, different vectors
    (the tiny backend's random network calls every image the same person)."""

    threshold = 0.5

    def embed(self, images):
        x = images.flatten(1)
        return torch.nn.functional.normalize(x - x.mean(1, keepdim=True), dim=1)


def test_the_substitute_target_is_the_nearest_prior_face_the_loss_network_calls_someone_else(varied_backend,
                                                                                            monkeypatch):
    tiny_backend = varied_backend
    net = _ColourIdentity()
    monkeypatch.setattr(tiny_backend, "loss_identity_model", lambda: net)
    w = tiny_backend.sample_latents(2, torch.Generator().manual_seed(9))
    views = tiny_backend.canonical_views(2)
    pool = tiny_backend.sample_latents(32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        e_pool = net.embed(tiny_backend.render(pool.repeat_interleave(2, 0), views.repeat(32, 1))).view(32, 2, -1)
        e_u = net.embed(tiny_backend.render(w.repeat_interleave(2, 0), views.repeat(2, 1))).view(2, 2, -1)
    sims = torch.einsum("bvd,pvd->bp", e_u, e_pool) / 2
    ceiling = float(sims.median())  # about half the pool qualifies
    cfg = TargetConfig(kind="substitute", stop_similarity=ceiling, min_central_change=0.0, pool_size=32,
                       pool_seed=7, stop_views=2)
    target, desc = make_target(tiny_backend, w, cfg)
    for r, i in enumerate(desc["pool_index"]):
        assert torch.equal(target[r], pool[i])
        assert sims[r, i] <= ceiling + 1e-6
        qualifying = (sims[r] <= ceiling + 1e-6).nonzero().flatten()
        nearest = qualifying[(pool[qualifying] - w[r]).norm(dim=1).argmin()]
        assert i == int(nearest)


def test_u_at_inverts_t_at_and_picks_the_first_position_where_the_map_is_flat():
    m = DialMap((0.0, 0.4, 0.4, 1.6), "test", "abc")
    for u in (0.0, 0.1, 0.5, 0.8, 1.0):
        t = m.t_at(u)
        assert m.t_at(m.u_at(t)) == pytest.approx(t)
    assert m.u_at(0.4) == pytest.approx(1 / 3)  # not 2/3: the first position that reaches t = 0.4
    assert m.u_at(5.0) == 1.0 and m.u_at(-1.0) == 0.0
