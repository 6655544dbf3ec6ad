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
from legato_core.metrics import AdapterKnob, dial_report, evenness, is_monotone, manifold_psnr, sharpness, step_evenness
from legato_core.unlearning import targets
from legato_core.unlearning.calibration import (
    CalibrationConfig,
    KnobProfile,
    calibrate_dial,
    identity_fraction,
    invert,
    knob_knots,
    profile_knob,
    up_to_floor,
)
from legato_core.unlearning.targets import TargetConfig, make_target, recorded_target


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
    with pytest.raises(ValueError, match="must end in"):
        adapter.set_dial(DialMap((0.0, 2.0), "test", adapter.digest()))  # past what the adapter offers
    adapter.set_dial(DialMap((0.0, 1.0), "test", adapter.digest()))  # a dial that ends early (at the floor)
    assert adapter.t_at(1.0) == 1.0 and adapter.u_at(1.4) == 1.0


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
    knots, pace = knob_knots(KnobProfile(values, [], identity, pixels))
    # neither alone: identity-only would freeze the pixels for 40 % of the slider
    assert pace not in ("pixel weight 0.00", "pixel weight 1.00")
    us = np.linspace(0, 1, 17)
    ts = np.interp(us, np.linspace(0, 1, len(knots)), knots)
    uneven = {}
    for name, fraction in (("identity", identity), ("pixels", pixels)):
        steps = np.diff(np.interp(ts, values, fraction))
        uneven[name] = steps.max() / steps.mean()
    # identity-only would jump 40 % of the pixel path in the first step (unevenness ~7); pixels-only the same for
    # identity: the blend keeps both near even, pixels within their tolerance of identity
    assert uneven["identity"] < 1.5 and uneven["pixels"] < 2.0


def _worst(values, profile, knots, tolerance=4 / 3):
    ts = np.interp(np.linspace(0, 1, 17), np.linspace(0, 1, len(knots)), knots)
    uneven = []
    for fraction in (profile.identity, profile.pixels):
        steps = np.diff(np.interp(ts, values, fraction))
        uneven.append(steps.max() / steps.mean())
    return max(uneven[0], uneven[1] / tolerance)


def test_the_faster_of_identity_and_pixels_paces_a_dial_that_blends_cannot():
    # as measured on the latent site: identity falls mostly mid-way, pixels change most at the two ends
    values = list(np.linspace(0, 1.6, 65))
    x = np.linspace(0, 1, 65)
    id_rate = 0.2 + np.sin(np.pi * x) ** 2
    px_rate = 0.3 + (2 * x - 1) ** 4 * 2
    frac = lambda r: np.concatenate([[0], np.cumsum(r[1:])]) / r[1:].sum()  # noqa: E731
    profile = KnobProfile(values, [], frac(id_rate), frac(px_rate))
    blends_only, _ = knob_knots(profile, CalibrationConfig(envelopes=0))
    with_envelopes, pace = knob_knots(profile)
    assert pace.startswith("faster of")
    assert _worst(values, profile, with_envelopes) < _worst(values, profile, blends_only) - 0.05


def test_identity_is_the_fall_of_the_powered_cosine_down_to_unrelated_and_never_comes_back():
    sims = [1.0, 0.9, 0.5, 0.6, 0.0, -0.3]  # rises once (0.5 -> 0.6), ends past unrelated
    plain = identity_fraction(sims, CalibrationConfig(identity_power=1.0))
    np.testing.assert_allclose(plain, [0, 0.1, 0.5, 0.5, 1, 1])
    squared = identity_fraction(sims, CalibrationConfig(identity_power=2.0))  # 1 - cos^2: the squared sine
    np.testing.assert_allclose(squared, [0, 0.19, 0.75, 0.75, 1, 1])
    unfloored = identity_fraction(sims, CalibrationConfig(identity_power=2.0, identity_floor=None))
    np.testing.assert_allclose(unfloored, np.array([0, 0.19, 0.75, 0.75, 1, 1.09]) / 1.09)


def test_a_dial_that_ends_at_the_floor_stops_where_the_person_is_first_unrelated():
    values = list(np.linspace(0, 1.6, 65))
    sims = list(np.linspace(1, -0.6, 65))  # unrelated (0) at t = 1.0, grid point 40
    profile = KnobProfile(values, sims, identity_fraction(sims, CalibrationConfig()), np.linspace(0, 1, 65))
    whole, _ = knob_knots(profile, CalibrationConfig(end_at_floor=False))
    ending, _ = knob_knots(profile)  # the default
    assert whole[-1] == pytest.approx(1.6) and ending[-1] == pytest.approx(1.0)
    cut = up_to_floor(profile)
    assert len(cut.values) == 41 and cut.pixels[-1] == 1.0 and cut.pixels[20] == pytest.approx(0.5)
    assert list(ending) == sorted(ending)  # still a monotone map, now over [0, 1.0]
    # a person the loss network never calls unrelated keeps the whole knob (no cut at a noisy lowest point)
    never = list(np.linspace(1, 0.2, 65))
    fraction = identity_fraction(never, CalibrationConfig())
    kept, _ = knob_knots(KnobProfile(values, never, fraction, np.linspace(0, 1, 65)))
    assert kept[-1] == pytest.approx(1.6)


def test_calibrate_dial_measures_the_adapter_and_attaches(varied_backend):
    tiny_backend = varied_backend
    adapter = _randomise(ODEAdapter.for_model(tiny_backend, ["w"], ODEConfig(hidden=8)), scale=0.2)
    w = tiny_backend.sample_latents(1, torch.Generator().manual_seed(2))
    whole = calibrate_dial(tiny_backend, adapter, w, CalibrationConfig(grid=9, knots=5, views=2, end_at_floor=False))
    adapter.set_dial(whole)
    assert len(whole.t) == 5 and whole.t[0] == 0 and whole.t[-1] == pytest.approx(1.6)
    assert "loss network" in whole.measured_by
    # by default the dial ends where the loss network's cosine first reaches its floor, if it does
    dial = calibrate_dial(tiny_backend, adapter, w, CalibrationConfig(grid=9, knots=5, views=2))
    profile = profile_knob(tiny_backend, AdapterKnob(tiny_backend, [adapter]), w, 1.6,
                           CalibrationConfig(grid=9, views=2))
    end = up_to_floor(profile).values[-1] if min(profile.similarity) <= 0 else 1.6
    assert dial.t[-1] == pytest.approx(end) and 0 < dial.t[-1] <= 1.6
    adapter.set_dial(dial)
    assert adapter.t_at(1.0) == pytest.approx(dial.t[-1])


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
                       pool_seed=7, stop_views=2, path_candidates=0)
    target, desc = make_target(tiny_backend, w, cfg)
    for r, i in enumerate(desc["pool_index"]):
        assert torch.equal(target[r], pool[i])
        assert sims[r, i] <= ceiling + 1e-6
        qualifying = (sims[r] <= ceiling + 1e-6).nonzero().flatten()
        nearest = qualifying[(pool[qualifying] - w[r]).norm(dim=1).argmin()]
        assert i == int(nearest)

    # with path candidates: of the 3 nearest qualifying faces, the one whose path scores best on the manifold
    scored = []

    blurred = set()  # paths whose midpoint is a smear: never taken while a sharp one clears the level

    def fake_path_quality(backend, w_a, w_b, positions, views):
        score = -float(w_b[0])  # any score the real measure could give: here, prefer a small first coordinate
        scored.append((w_b.clone(), score))
        return score, 0.5 if round(score, 6) in blurred else 1.0

    monkeypatch.setattr(targets, "path_quality", fake_path_quality)
    target, desc = make_target(tiny_backend, w[:1], TargetConfig(**{**cfg.__dict__, "path_candidates": 3}))
    qualifying = (sims[0] <= ceiling + 1e-6).nonzero().flatten()
    three = qualifying[(pool[qualifying] - w[0]).norm(dim=1).argsort()[:3]]
    assert len(scored) == 3 and all(any(torch.equal(b, pool[j]) for b, _ in scored) for j in three.tolist())
    best = max(scored, key=lambda x: x[1])[0]
    assert torch.equal(target[0], best) and desc["path_db"][0] == pytest.approx(max(x[1] for x in scored), abs=0.01)
    # with a level: the candidates are scored nearest first, and the first whose path clears it is taken
    scored.clear()
    level = sorted(-float(pool[j][0]) for j in three.tolist())[1]  # two of the three clear it
    target, desc = make_target(tiny_backend, w[:1], TargetConfig(**{**cfg.__dict__, "path_candidates": 3,
                                                                    "path_min_db": level}))
    first = next(k for k, j in enumerate(three.tolist()) if -float(pool[j][0]) >= level)
    assert len(scored) == first + 1 and torch.equal(target[0], pool[three[first]])
    # the same level, but the first path that clears it blurs half way: the next that clears it and stays sharp
    scored.clear()
    blurred.add(round(-float(pool[three[first]][0]), 6))
    target, desc = make_target(tiny_backend, w[:1], TargetConfig(**{**cfg.__dict__, "path_candidates": 3,
                                                                    "path_min_db": level}))
    other = next(k for k, j in enumerate(three.tolist()) if -float(pool[j][0]) >= level and k != first)
    assert torch.equal(target[0], pool[three[other]])
    # a saved adapter's description names its target: re-measuring its dial needs no new search
    assert torch.equal(recorded_target(tiny_backend, w[:1], {"target": desc}), target)


def test_a_target_without_a_pool_face_is_found_again_by_the_same_search(varied_backend):
    w = varied_backend.sample_latents(1, torch.Generator().manual_seed(5))
    target, desc = make_target(varied_backend, w, TargetConfig(kind="extrapolated", stop_similarity=None))
    assert not torch.equal(target, w)
    torch.testing.assert_close(recorded_target(varied_backend, w, {"target": desc}), target)


def test_path_quality_is_the_midpoints_manifold_psnr_and_its_sharpness_over_the_ends(varied_backend):
    tiny_backend = varied_backend
    w = tiny_backend.sample_latents(2, torch.Generator().manual_seed(3))
    views = tiny_backend.canonical_views(2)
    db, sharp = targets.path_quality(tiny_backend, w[0], w[1], (0.5,), views)
    with torch.no_grad():
        mid = tiny_backend.render(((w[0] + w[1]) / 2)[None].expand(2, -1), views)
        ends = torch.minimum(sharpness(tiny_backend.render(w[:1].expand(2, -1), views)),
                             sharpness(tiny_backend.render(w[1:].expand(2, -1), views)))
    assert db == pytest.approx(float(manifold_psnr(tiny_backend, mid).mean()), abs=1e-4)
    assert sharp == pytest.approx(float((sharpness(mid) / ends).mean()), rel=1e-4)


def test_u_at_inverts_t_at_and_picks_the_first_position_where_the_map_is_flat():
    m = DialMap((0.0, 0.4, 0.4, 1.6), "test", "abc")
    for u in (0.0, 0.1, 0.5, 0.8, 1.0):
        t = m.t_at(u)
        assert m.t_at(m.u_at(t)) == pytest.approx(t)
    assert m.u_at(0.4) == pytest.approx(1 / 3)  # not 2/3: the first position that reaches t = 0.4
    assert m.u_at(5.0) == 1.0 and m.u_at(-1.0) == 0.0
