"""The way to the target: reference paths (straight or staged through waypoints) and the term that pins the
adapter's solver states to them."""

import pytest
import torch

from legato_core.adapters import active
from legato_core.unlearning import ForgetConfig, TargetConfig, train_adapter
from legato_core.unlearning.paths import DrawnPath, path_pinning, polyline_at, reference_displacements, waypoints

pytestmark = pytest.mark.usefixtures("one_thread")


def test_points_sit_at_equal_arc_length_along_the_polyline():
    corner = [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 3.0])]
    got = polyline_at(corner, torch.tensor([0.0, 0.25, 0.5, 1.0]))
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [1.0, 3.0]]))
    still = polyline_at([torch.ones(3), torch.ones(3)], torch.tensor([0.0, 0.5]))
    assert torch.equal(still, torch.ones(2, 3)), "a path of no length stays put"


def test_paced_by_segments_each_waypoint_to_waypoint_takes_an_equal_share():
    corner = [torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 3.0])]
    got = polyline_at(corner, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), pace="segments")
    torch.testing.assert_close(got, torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [1.0, 1.5], [1.0, 3.0]]))
    with pytest.raises(ValueError, match="unknown pace"):
        polyline_at(corner, torch.tensor([0.5]), pace="time")
    with pytest.raises(ValueError, match="unknown path pace"):
        TargetConfig(path_pace="time")


def test_a_straight_reference_is_the_fraction_of_the_way(tiny_backend):
    w_u, w_t = tiny_backend.sample_latents(2, torch.Generator().manual_seed(1)).split(1)
    fr = torch.tensor([0.25, 0.5, 1.0])
    off = reference_displacements(tiny_backend, w_u, w_t, "straight", fr)
    torch.testing.assert_close(off, fr[None, :, None] * (w_t - w_u)[:, None])


def test_the_way_around_the_average_face_ends_where_the_straight_one_does_and_stays_as_far_from_it(tiny_backend):
    w_u, w_t = tiny_backend.sample_latents(2, torch.Generator().manual_seed(1)).split(1)
    off = reference_displacements(tiny_backend, w_u, w_t, "around_average", torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(off[0, 1], (w_t - w_u)[0])
    avg = tiny_backend.w_avg.reshape(-1)
    r_u, r_t, r_mid = ((w - avg).norm() for w in (w_u[0], w_t[0], w_u[0] + off[0, 0]))
    assert float(r_mid) > float(((w_u[0] + w_t[0]) / 2 - avg).norm())  # the chord's midpoint lies nearer
    assert min(r_u, r_t) - 0.05 <= r_mid <= max(r_u, r_t) + 0.05


def test_staged_paths_need_a_backend_that_offers_them(tiny_backend):
    w = tiny_backend.sample_latents(2, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="staged waypoints"):
        waypoints(tiny_backend, w[0], w[1], "categories_first")
    with pytest.raises(ValueError, match="unknown path 'zigzag'"):
        waypoints(tiny_backend, w[0], w[1], "zigzag")
    with pytest.raises(ValueError, match="unknown target path"):
        TargetConfig(path="zigzag")


def test_pinning_is_zero_on_the_reference_and_grows_off_it():
    start = torch.zeros(2, 4)
    offsets = torch.linspace(0.25, 1, 4)[None, :, None].expand(2, 4, 4)
    on_path = [start, *[start + offsets[:, k] for k in range(4)]]
    assert float(path_pinning(on_path, start, offsets)) == 0
    off_path = [s + 0.1 for s in on_path]
    assert float(path_pinning(off_path, start, offsets)) == pytest.approx(0.01 * 4 / 4)
    with pytest.raises(ValueError, match="3 solver states after the start, 4 reference points"):
        path_pinning(on_path[:4], start, offsets)


def _states(backend, adapter, w):
    with torch.no_grad(), active(backend, [(adapter, adapter.config.t_end)], record=True) as states:
        backend.synthesize(w, backend.canonical_views(1))
    return states["w"]


def test_the_reference_path_holds_the_solver_states_on_a_staged_way(tiny_backend, monkeypatch):
    """A made-up staged path with a corner half way: pinned, the adapter's states follow it; unpinned, they do not."""
    w = tiny_backend.sample_latents(1, torch.Generator().manual_seed(5))
    corner = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(2))
    asked = []

    def staged(w_u, w_target, kind, target=None, row=0):
        asked.append(kind)
        mid = (w_u + w_target) / 2 + corner * (w_target - w_u).norm() / corner.norm() / 2
        return [w_u, mid, w_target]

    monkeypatch.setattr(tiny_backend, "staged_waypoints", staged, raising=False)
    cfg = ForgetConfig(steps=40, lr=1e-2, sites=["w"], view_anchors=2, calibration=None, scope=None)
    cfg.target.path = "categories_first"
    plain = train_adapter(tiny_backend, w, cfg)
    cfg.weights.reference_path = 300.0
    pinned = train_adapter(tiny_backend, w, cfg)
    assert asked == ["categories_first"], "waypoints asked once per person (anchors move in parallel)"
    assert "reference_path" in pinned.history[-1] and "reference_path" not in plain.history[-1]
    states = _states(tiny_backend, pinned.adapter, w)
    fr = torch.arange(1, len(states)) / (len(states) - 1)
    offsets = reference_displacements(tiny_backend, w, pinned.target_latent[:1], "categories_first", fr)
    d_pinned = float(path_pinning(states, w, offsets))
    d_plain = float(path_pinning(_states(tiny_backend, plain.adapter, w), w, offsets))
    assert d_pinned < 0.5 * d_plain, (d_pinned, d_plain)


def test_the_reference_path_is_refused_where_it_cannot_pin(tiny_backend):
    w = tiny_backend.sample_latents(1, torch.Generator().manual_seed(5))
    conv = ForgetConfig(steps=1, sites=["b8"], calibration=None)
    conv.weights.reference_path = 1.0
    with pytest.raises(ValueError, match="latent site"):
        train_adapter(tiny_backend, w, conv)
    rk4 = ForgetConfig(steps=1, sites=["w"], calibration=None)
    rk4.weights.reference_path, rk4.ode.method = 1.0, "rk4"
    with pytest.raises(ValueError, match="euler"):
        train_adapter(tiny_backend, w, rk4)


def test_a_latents_factors_are_found_with_their_categories(embedded):
    from legato_core.faceworld import sample_identities
    from legato_core.faceworld.factors import CATEGORY_GROUPS, identity_vector, shown_category

    truth = identity_vector(sample_identities(list(range(300, 306))))
    w = embedded.generator.map_identity(truth)
    for e, latent in zip(truth, w, strict=True):
        found = embedded.identity_factors(latent)
        assert [shown_category(found, g[0]) for g in CATEGORY_GROUPS] == \
            [shown_category(e, g[0]) for g in CATEGORY_GROUPS]
        assert float((embedded.generator.map_identity(found[None])[0] - latent).norm() / latent.norm()) < 0.05


def test_a_staged_way_switches_the_face_worlds_categories_a_group_at_a_time(embedded):
    """Each waypoint of ``categories_one_by_one`` has one more of the target's categories (in its factors, and for
    the hair style, which the face encoder reads reliably, in its render); the ends are the two people."""
    from legato_core.faceworld import sample_identities
    from legato_core.faceworld.factors import CATEGORY_GROUPS, identity_vector, shown_category

    e = identity_vector(sample_identities(list(range(300, 340))))
    groups = [g[0] for g in CATEGORY_GROUPS if g[0] != "mole"]  # a mole is a few pixels: both with, or without
    a, b = next((i, j) for i in range(len(e)) for j in range(len(e))
                if shown_category(e[i], "hair_style") != shown_category(e[j], "hair_style")
                and sum(shown_category(e[i], g) != shown_category(e[j], g) for g in groups) >= 3
                and shown_category(e[i], "mole") == shown_category(e[j], "mole"))
    w = embedded.generator.map_identity(e[[a, b]])
    differ = [g for g in groups if shown_category(e[a], g) != shown_category(e[b], g)]
    points = embedded.staged_waypoints(w[0], w[1], "categories_one_by_one")
    assert torch.equal(points[0], w[0]) and torch.equal(points[-1], w[1])
    assert len(points) == 2 + len(differ)
    with torch.no_grad():
        views = embedded.canonical_views(1).expand(len(points), -1)
        read = embedded.view_encoder(embedded.render(torch.stack(points), views))[:, :embedded.factor_dim]
    for k, point in enumerate(points):
        want = [shown_category(e[b] if i < k else e[a], g) for i, g in enumerate(differ)]
        assert [shown_category(embedded.identity_factors(point), g) for g in differ] == want, f"waypoint {k}"
        assert shown_category(read[k], "hair_style") == want[differ.index("hair_style")], f"render {k}"
    assert len(embedded.staged_waypoints(w[0], w[1], "categories_first")) == 3, "all switch at one waypoint"
    hair = embedded.staged_waypoints(w[0], w[1], "hair_first")
    assert len(hair) == 3 and shown_category(embedded.identity_factors(hair[1]), "hair_style") == \
        shown_category(e[b], "hair_style"), "only the hair style is staged"
    assert [shown_category(embedded.identity_factors(hair[1]), g) for g in differ if g != "hair_style"] == \
        [shown_category(e[a], g) for g in differ if g != "hair_style"]


def test_a_drawn_path_moves_every_latent_by_the_same_offset_and_none_is_the_base():
    class Echo:
        def render(self, latents, views):
            return latents

    base = Echo()
    knob = DrawnPath(base, [torch.zeros(2), torch.tensor([1.0, 0]), torch.tensor([1.0, 1.0])], "arc")
    with knob.at(None) as model:
        assert model is base
    with knob.at(0.75) as model:  # three quarters of the arc length 2: along the second segment
        out = model.render(torch.tensor([[0.0, 0], [5.0, 5]]), None)
    assert torch.allclose(out, torch.tensor([[1.0, 0.5], [6.0, 5.5]]))
