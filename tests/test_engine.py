"""The forget engine's mechanics (on a tiny random generator): jobs, progress, cancellation, determinism."""

import threading
from types import SimpleNamespace

import pytest
import torch

from legato_core.adapters import active_adapters
from legato_core.unlearning import Cancelled, ForgetConfig, ForgetJob, TargetConfig, make_target, train_adapter
from legato_core.unlearning.objectives import intensity_schedule, monotone_forgetting, trajectory_consistency


def _latent(backend):
    return backend.sample_latents(1, torch.Generator().manual_seed(5))


def test_progress_events_cover_every_step_with_losses_and_eta(tiny_backend):
    events = []
    train_adapter(tiny_backend, _latent(tiny_backend), ForgetConfig(steps=4), on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert all({"total", "identity", "trajectory", "preservation"} <= set(e.losses) for e in events)
    assert events[-1].eta == 0 and events[0].elapsed > 0
    assert active_adapters() == (), "the engine must leave the base model untouched"


def test_training_changes_the_adapter_away_from_identity(tiny_backend):
    res = train_adapter(tiny_backend, _latent(tiny_backend), ForgetConfig(steps=3, lr=1e-2))
    assert any(p.abs().sum() > 0 for n, p in res.adapter.named_parameters() if n.endswith("out.weight"))


def test_a_run_trains_the_backends_forget_sites_unless_its_config_names_others(tiny_backend, monkeypatch):
    assert set(tiny_backend.adapter_sites) == {"w", "b8", "b16"}
    monkeypatch.setattr(type(tiny_backend), "forget_sites", property(lambda self: ["b8"]))
    assert list(train_adapter(tiny_backend, _latent(tiny_backend), ForgetConfig(steps=1)).adapter.fields) == ["b8"]
    named = ForgetConfig(steps=1, sites=["b8", "b16"])
    assert list(train_adapter(tiny_backend, _latent(tiny_backend), named).adapter.fields) == ["b8", "b16"]


def test_same_seed_same_adapter(tiny_backend):
    a = train_adapter(tiny_backend, _latent(tiny_backend), ForgetConfig(steps=3, seed=11)).adapter
    b = train_adapter(tiny_backend, _latent(tiny_backend), ForgetConfig(steps=3, seed=11)).adapter
    for (ka, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), ka


def test_cancel_mid_run_leaves_base_untouched(tiny_backend):
    w = _latent(tiny_backend)
    v = tiny_backend.sample_views(2, torch.Generator().manual_seed(0))
    base = tiny_backend.render(w.expand(2, -1), v)
    started = threading.Event()
    job = ForgetJob(tiny_backend, w, ForgetConfig(steps=10_000), on_progress=lambda ev: started.set())
    job.start()
    assert started.wait(30)
    job.cancel()
    job.thread.join(30)
    assert job.state == "cancelled" and job.result is None
    assert 1 <= len(job.events) < 10_000
    assert torch.equal(tiny_backend.render(w.expand(2, -1), v), base)
    with pytest.raises(RuntimeError, match="cancelled"):
        job.wait()


def test_failed_job_reports_its_error(tiny_backend):
    job = ForgetJob(tiny_backend, torch.zeros(2, 3, 4, 5, 6), ForgetConfig(steps=2)).start()
    job.thread.join(30)
    assert job.state == "failed" and isinstance(job.error, ValueError)


def test_should_stop_raises_cancelled(tiny_backend):
    with pytest.raises(Cancelled):
        train_adapter(tiny_backend, _latent(tiny_backend), ForgetConfig(steps=5), should_stop=lambda: True)


def test_targets(tiny_backend):
    w = _latent(tiny_backend)
    avg, _ = make_target(tiny_backend, w, TargetConfig("average"))
    assert torch.equal(avg[0], tiny_backend.w_avg)
    ext, desc = make_target(tiny_backend, w, TargetConfig("extrapolated", stop_similarity=None))
    # GUIDE's geometry: on the far side of w_avg, along the same line, at distance d
    d_u, d_t = w - tiny_backend.w_avg, ext - tiny_backend.w_avg
    assert torch.nn.functional.cosine_similarity(d_u, d_t).item() == pytest.approx(-1, abs=1e-4)
    assert d_t.norm().item() == pytest.approx(desc["distance"], rel=1e-4)
    prox, desc = make_target(tiny_backend, w, TargetConfig("proximity", pool_size=16))
    assert prox.shape == w.shape and len(desc["pool_similarity"]) == 1
    with pytest.raises(ValueError, match="unknown target"):
        TargetConfig("nowhere")
    with pytest.raises(ValueError, match="cosine"):
        TargetConfig("extrapolated", stop_similarity=1.5)


class _LatentIsImage:
    """A 2-D latent space whose "image" is the latent shifted by (0, 0.5) and whose loss network is the image's
    direction: cosines along GUIDE's line are known in closed form."""

    w_avg = torch.zeros(2)
    renders_fast = True

    def sample_latents(self, n, generator):
        return torch.nn.functional.normalize(torch.randn(n, 2, generator=generator), dim=1)  # typical radius 1

    def canonical_views(self, k):
        return torch.zeros(k, 1)

    def render(self, latent, views):  # a two-channel, one-pixel image
        return (latent + torch.tensor([0.0, 0.5]))[:, :, None, None]

    def loss_identity_model(self):
        return SimpleNamespace(embed=lambda x: torch.nn.functional.normalize(x.flatten(1), dim=1))


def test_extrapolated_target_stops_where_the_loss_network_reaches_the_stop_similarity():
    backend, w = _LatentIsImage(), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target, desc = make_target(backend, w, TargetConfig("extrapolated", stop_similarity=0.0, stop_points=65))
    # row 0 runs (1, 0) -> (-1, 0): image (x, 0.5) is orthogonal to (1, 0.5) at x = -1/4, 5/8 of the way.
    # row 1 runs (0, 1) -> (0, -1): the image flips direction at y = -1/2, 3/4 of the way
    assert desc["stop_fraction"] == pytest.approx([5 / 8, 3 / 4], abs=1 / 64)
    assert torch.allclose(target[0], torch.tensor([-0.25, 0.0]), atol=0.03)
    assert target[1, 0] == 0, "the target stays on GUIDE's line"
    never, desc = make_target(backend, w, TargetConfig("extrapolated", stop_similarity=-0.9, search_extend=1.0))
    assert desc["stop_fraction"][0] == 1.0 and torch.allclose(never[0], -w[0]), "no crossing (row 0 ends at -0.6)"


def test_a_search_that_never_stops_can_go_on_along_the_same_line():
    backend, w = _LatentIsImage(), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cfg = TargetConfig("extrapolated", stop_similarity=-0.7, stop_points=129, search_extend=1.0)
    near, desc_near = make_target(backend, w, cfg)
    assert desc_near["stop_fraction"][0] == 1.0, "row 0's cosine only falls to -0.6 within one radius"
    far, desc = make_target(backend, w, TargetConfig(**{**cfg.__dict__, "search_extend": 3.0}))
    x = float(far[0, 0])
    cos = (x + 0.25) / ((x * x + 0.25) ** 0.5 * (1.25 ** 0.5))  # image (x, 0.5) against the person's (1, 0.5)
    assert x < -1 and far[0, 1] == 0 and cos == pytest.approx(-0.7, abs=0.01), "on the line, past one radius"
    assert desc["stop_fraction"][0] == pytest.approx((1 - x) / 2, abs=1e-5), "as a fraction of the way to -w"
    assert torch.equal(far[1], near[1]) and desc["stop_fraction"][1] == desc_near["stop_fraction"][1]


def test_the_stop_waits_until_the_centre_of_the_face_has_changed_enough():
    backend, w = _LatentIsImage(), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cfg = TargetConfig("extrapolated", stop_similarity=0.0, stop_points=65, search_extend=1.0)
    # row 0's image (1 - 2f, 0.5) changes by f on average over its two channels; row 1's (0, 0.5 + 1 - 2f) by f
    _, desc_same = make_target(backend, w, TargetConfig(**{**cfg.__dict__, "min_central_change": 0.5}))
    assert desc_same["stop_fraction"] == pytest.approx([5 / 8, 3 / 4], abs=1 / 64), "the cosine stops later"
    later, desc = make_target(backend, w, TargetConfig(**{**cfg.__dict__, "min_central_change": 0.7}))
    assert desc["stop_fraction"] == pytest.approx([0.7, 0.75], abs=1e-5), "row 0 waits for its centre"
    assert torch.allclose(later[0], torch.tensor([1 - 2 * 0.7, 0.0]), atol=1e-5)
    never, desc = make_target(backend, w, TargetConfig(**{**cfg.__dict__, "min_central_change": 1.5}))
    assert desc["stop_fraction"] == [1.0, 1.0] and torch.allclose(never, -w), "a change never reached: full distance"
    with pytest.raises(ValueError, match="min_central_change"):
        TargetConfig(min_central_change=-0.1)


def test_backends_that_render_slowly_skip_the_stop_search(tiny_backend):
    tiny_backend.renders_fast = False
    w = _latent(tiny_backend)
    target, desc = make_target(tiny_backend, w, TargetConfig("extrapolated"))
    assert desc["stop_fraction"] is None
    assert (target - tiny_backend.w_avg).norm().item() == pytest.approx(desc["distance"], rel=1e-4)


def test_trajectory_consistency_is_kinetic_energy():
    s = [torch.zeros(2), torch.ones(2), torch.ones(2) * 3]
    assert trajectory_consistency(s).item() == pytest.approx((1 + 4) / 2)
    assert trajectory_consistency(s[:1]).item() == 0


def test_intensity_schedule_pins_the_midpoint_to_the_straight_line_in_similarity():
    def embed(x):
        return torch.nn.functional.normalize(x.flatten(1), dim=1)

    original, end = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # similarity at T: 0
    on_line = torch.tensor([[1.0, 3**0.5]])  # similarity 0.5, the line's value half way
    assert intensity_schedule(embed, original, end, on_line, 0.5).item() == pytest.approx(0, abs=1e-6)
    mid = original.clone().requires_grad_(True)  # not forgotten at all half way: (1 - 0.5)^2
    end = end.requires_grad_(True)
    loss = intensity_schedule(embed, original, end, mid, 0.5)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert end.grad is None, "the schedule shapes the path, never the end point"


def test_monotone_hinge_is_free_for_a_falling_path_and_lifts_a_rebounding_one():
    def embed(x):
        return torch.nn.functional.normalize(x.flatten(1), dim=1)

    original, end = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # similarity at T: 0.707
    falling = torch.tensor([[1.0, 0.5]])  # 0.894 half way: above the end by more than the margin 0.1 * 0.5
    assert monotone_forgetting(embed, original, end, falling, 0.5, 0.1).item() == 0
    dipped = torch.tensor([[0.0, 1.0]], requires_grad=True)  # 0 half way, then back up to 0.707 at T
    end = end.requires_grad_(True)
    loss = monotone_forgetting(embed, original, end, dipped, 0.5, 0.1)
    assert loss.item() == pytest.approx(2**-0.5 + 0.05, abs=1e-5)
    loss.backward()
    assert end.grad is None, "the hinge shapes the path, never the end point"
    assert dipped.grad[0, 0] < 0, "descending the loss moves the dipped point back towards the person"
    assert monotone_forgetting(embed, original, end.detach(), end.detach(), 1.0, 0.1).item() == 0, \
        "the margin vanishes at T"


def _invert_by_pooling(backend):
    """A stand-in inversion for the tiny generator: a fixed projection of the image's pooled colours."""
    proj = torch.randn(3 * 16, backend.w_avg.numel(), generator=torch.Generator().manual_seed(0))

    def invert(images):
        pooled = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
        return pooled @ proj, backend.sample_views(len(images))
    return invert


def test_view_anchors_go_where_the_person_goes_moved_by_their_own_offset(tiny_backend):
    tiny_backend.invert = _invert_by_pooling(tiny_backend)
    w = _latent(tiny_backend)
    cfg = ForgetConfig(steps=2, view_anchors=3)
    a, b = train_adapter(tiny_backend, w, cfg), train_adapter(tiny_backend, w, cfg)
    assert a.latent.shape == (4, w.shape[1]) and torch.equal(a.latent[:1], w), "the person first, then 3 anchors"
    assert a.target_latent.shape == a.latent.shape, "every anchor has a target"
    torch.testing.assert_close(a.target_latent[1:] - a.target_latent[:1], a.latent[1:] - a.latent[:1])
    assert torch.equal(a.latent, b.latent) and a.history == b.history, "deterministic under the seed"
    assert len(train_adapter(tiny_backend, w, ForgetConfig(steps=1, view_anchors=0)).latent) == 1
    assert len(train_adapter(tiny_backend, w, ForgetConfig(steps=1)).latent) == 1 + ForgetConfig.view_anchors
    tiny_backend.renders_fast = False
    assert len(train_adapter(tiny_backend, w, ForgetConfig(steps=1, view_anchors=3)).latent) == 1, \
        "skipped where a render is a sampling loop"


@pytest.mark.parametrize("weight, logged, not_logged", [
    ("intensity_schedule", "schedule", None), ("monotone", "monotone", "schedule"), ("path", "path", "monotone")])
def test_path_shaping_terms_train_deterministically_and_only_when_asked(tiny_backend, weight, logged, not_logged):
    w = _latent(tiny_backend)
    cfg = ForgetConfig(steps=2, seed=3)
    assert logged not in train_adapter(tiny_backend, w, cfg).history[-1]
    setattr(cfg.weights, weight, 1.0)
    a, b = train_adapter(tiny_backend, w, cfg), train_adapter(tiny_backend, w, cfg)
    assert logged in a.history[-1] and not_logged not in a.history[-1] and a.history == b.history
    if weight == "path":
        assert a.history[-1]["path"] > 0


def test_path_term_pulls_the_midpoint_towards_the_latent_line(tiny_backend, monkeypatch):
    """At t' = f T the adapted render is compared with the frozen render of w_u + f (w_target - w_u)."""
    from legato_core.unlearning import step_objectives
    from legato_core.unlearning.targets import make_target

    seen = []
    original = step_objectives.ImageLoss.forward

    def spy(self, img, feat, target_img, target_feat, identity_weight=None):
        seen.append(target_img.detach().clone())
        return original(self, img, feat, target_img, target_feat, identity_weight)

    monkeypatch.setattr(step_objectives.ImageLoss, "forward", spy)
    w = _latent(tiny_backend)
    cfg = ForgetConfig(steps=1, seed=5)
    cfg.weights.path = 1.0
    train_adapter(tiny_backend, w, cfg)
    # the fraction is the first draw after the step's batch: replay the generator to find it
    gen = torch.Generator().manual_seed(cfg.seed)
    res_target = make_target(tiny_backend, w, cfg.target)[0]
    objective = step_objectives.ImageObjective(tiny_backend, w, res_target, cfg, gen)
    batch = step_objectives.sample_step(tiny_backend, w, res_target, cfg, gen, objective.radius)
    fraction = float(torch.rand((), generator=gen))
    on_line = batch.src[:batch.k_l] + fraction * (batch.dst[:batch.k_l] - batch.src[:batch.k_l])
    with torch.no_grad():
        expected = tiny_backend.synthesize(on_line, batch.views[:batch.k_l])
    assert 0 < fraction < 1
    torch.testing.assert_close(seen[-1], expected, rtol=1e-4, atol=1e-5)


def test_a_config_can_be_laid_over_the_defaults_field_by_field():
    cfg = ForgetConfig().merged({"steps": 7, "target": {"kind": "extrapolated"}, "weights": {"trajectory": 1.0},
                                 "calibration": None})
    assert cfg.steps == 7 and cfg.target.kind == "extrapolated" and cfg.weights.trajectory == 1.0
    assert cfg.calibration is None
    assert cfg.target.stop_similarity == ForgetConfig().target.stop_similarity  # untouched fields keep defaults
    assert cfg.weights.preservation == ForgetConfig().weights.preservation
    with pytest.raises(ValueError, match=r"unknown ForgetConfig field 'weights\.trajectry'"):
        ForgetConfig().merged({"weights": {"trajectry": 1.0}})



def test_a_parallel_scope_carries_the_persons_neighbourhood_along_their_own_path(tiny_backend):
    from legato_core.unlearning.engine import ScopeConfig

    w = _latent(tiny_backend)
    res = train_adapter(tiny_backend, w, ForgetConfig(steps=1, sites=["w"], scope=ScopeConfig(carry="parallel")))
    scope = res.adapter.scope
    assert scope.carry == "parallel" and torch.equal(scope.centres[:1], w), "the upload's path is the one carried"
    direction = torch.randn(w.shape, generator=torch.Generator().manual_seed(1))
    nearby = w + 0.5 * scope.inner * direction / direction.norm()  # within the scope's full weight
    t = res.adapter.config.t_max
    torch.testing.assert_close(res.adapter.transform("w", nearby, t) - nearby, res.adapter.transform("w", w, t) - w)
    assert train_adapter(tiny_backend, w, ForgetConfig(steps=1, sites=["w"])).adapter.scope.carry == "parallel", \
        "the default"
    with pytest.raises(ValueError, match="carry"):
        ScopeConfig(carry="sideways")


def test_a_scope_measures_through_the_backends_inversion_scatter_when_asked_and_it_has_one(tiny_backend):
    from legato_core.unlearning.engine import ScopeConfig
    from legato_core.unlearning.targets import typical_radius

    w = _latent(tiny_backend)
    asked = ForgetConfig(steps=1, sites=["w"], scope=ScopeConfig(metric="inversion_scatter"))
    plain = train_adapter(tiny_backend, w, asked).adapter
    assert plain.scope.metric is None and plain.description["scope_metric"] == "latent", "none to measure with"
    metric = torch.diag(torch.linspace(0.5, 2.0, w.shape[1]))
    tiny_backend.inversion_whitening = metric
    whitened = train_adapter(tiny_backend, w, asked).adapter
    assert torch.equal(whitened.scope.metric, metric) and whitened.description["scope_metric"] == "whitened"
    unit = typical_radius(tiny_backend, metric=metric)
    assert unit != typical_radius(tiny_backend)
    radii = ScopeConfig()
    assert (whitened.scope.inner, whitened.scope.outer) == pytest.approx((radii.inner * unit, radii.outer * unit))
    plain_cfg = ForgetConfig(steps=1, sites=["w"], scope=ScopeConfig(metric="latent"))
    assert train_adapter(tiny_backend, w, plain_cfg).adapter.scope.metric is None
    with pytest.raises(ValueError, match="metric"):
        ScopeConfig(metric="manhattan")
