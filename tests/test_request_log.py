"""The model after many deletion requests: an adapter's scope, the request log as one file, and routed rendering
that is the plain composition bit for bit. Drawing tests use the embedded generator (the tiny random one draws
the same face for every latent)."""

import pytest
import torch

from legato_core.adapters import AdapterMismatchError, ODEAdapter, ODEConfig, active
from legato_core.adapters.request_log import RequestLog
from legato_core.adapters.scope import Scope

pytestmark = pytest.mark.usefixtures("one_thread")


def _person_adapter(backend, centre: torch.Tensor, seed: int, inner: float = 0.5, outer: float = 1.0):
    """A random latent adapter with a scope around ``centre`` (1, D)."""
    adapter = ODEAdapter.for_model(backend, ["w"], ODEConfig(hidden=16), {"seed": seed})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    adapter.set_scope(Scope(centre, inner, outer))
    return adapter


def _people(backend, n: int):
    """n prior people; scopes of radius 1 around them do not overlap (prior latents are 1.4-2.6 apart)."""
    return backend.sample_latents(n, torch.Generator().manual_seed(5))


def test_a_scope_weighs_1_near_the_person_0_far_away_and_smoothly_between():
    scope = Scope(torch.zeros(2, 4) + torch.tensor([[0.0], [10.0]]), inner=1.0, outer=2.0)
    x = torch.tensor([[0.5, 0, 0, 0], [11, 10, 10, 10], [1.5, 0, 0, 0], [3, 0, 0, 0]], dtype=torch.float32)
    w = scope.weight(x).squeeze(1)
    assert w[0] == 1 and w[1] == 1  # within inner of either centre
    assert 0 < w[2] < 1
    assert w[3] == 0


def test_a_scope_is_refused_with_radii_out_of_order_or_no_centres():
    with pytest.raises(ValueError, match="inner < outer"):
        Scope(torch.zeros(1, 4), 2.0, 1.0)
    with pytest.raises(ValueError, match="centres"):
        Scope(torch.zeros(0, 4), 1.0, 2.0)


def test_an_adapter_with_a_scope_moves_the_person_as_without_and_leaves_far_latents_exactly(tiny_backend):
    people = _people(tiny_backend, 3)
    adapter = _person_adapter(tiny_backend, people[:1], seed=1)
    free = _person_adapter(tiny_backend, people[:1], seed=1)
    free.set_scope(None)
    moved = adapter.transform("w", people, 1.6)
    assert torch.equal(moved[0], free.transform("w", people, 1.6)[0])  # the person: the field bit for bit
    assert torch.equal(moved[1:], people[1:])  # everyone out of scope: exactly as they came in
    assert not torch.equal(free.transform("w", people, 1.6)[1:], people[1:])  # without a scope they move


def test_a_scope_is_saved_and_restored_with_its_adapter(tiny_backend, tmp_path):
    people = _people(tiny_backend, 2)
    adapter = _person_adapter(tiny_backend, people[:1], seed=2, inner=0.7, outer=1.3)
    loaded = ODEAdapter.load(adapter.save(tmp_path / "a.safetensors"), tiny_backend)
    assert torch.equal(loaded.scope.centres, adapter.scope.centres)
    assert (loaded.scope.inner, loaded.scope.outer) == (0.7, 1.3)
    assert torch.equal(loaded.transform("w", people, 1.0), adapter.transform("w", people, 1.0))


def test_a_parallel_scope_moves_everyone_near_the_person_by_the_persons_own_displacement(tiny_backend):
    people = _people(tiny_backend, 3)
    adapter = _person_adapter(tiny_backend, people[:1], seed=3)
    adapter.set_scope(Scope(people[:1], 0.5, 1.0, carry="parallel"))
    field_only = _person_adapter(tiny_backend, people[:1], seed=3)
    field_only.set_scope(None)
    direction = torch.randn(2, people.shape[1], generator=torch.Generator().manual_seed(0))
    direction = direction / direction.norm(dim=1, keepdim=True)
    near = people[:1] + torch.tensor([[0.3], [0.75]]) * direction  # full weight, and half way to the edge
    x = torch.cat([people, near])
    for t in (0.4, 1.6):
        person_at_t = field_only.transform("w", people[:1], t)
        moved = adapter.transform("w", x, t)
        assert torch.equal(moved[0], person_at_t[0]), "the person: the field's path bit for bit"
        assert torch.equal(moved[1:3], people[1:]), "everyone out of scope: exactly as they came in"
        torch.testing.assert_close(moved[3:4] - near[:1], person_at_t - people[:1])  # carried along in parallel
        weight = adapter.scope.weight(near[1:]).item()
        assert 0 < weight < 1
        torch.testing.assert_close(moved[4:] - near[1:], weight * (person_at_t - people[:1]))
        # the field itself fades off the person: the same latent is not carried as far by it
        assert (field_only.transform("w", near[:1], t) - near[:1] - (person_at_t - people[:1])).norm() > 1e-3


def test_a_parallel_scope_records_the_states_of_the_path_each_row_takes(tiny_backend):
    people = _people(tiny_backend, 1)
    adapter = _person_adapter(tiny_backend, people, seed=4)
    adapter.set_scope(Scope(people, 1.0, 2.0, carry="parallel"))
    x = torch.cat([people, people + 0.1])  # 0.57 away: full weight
    states, own = {}, {}
    out = adapter.transform("w", x, 1.6, states)
    adapter.set_scope(None)
    adapter.transform("w", people, 1.6, own)
    assert torch.equal(states["w"][0], x) and torch.equal(states["w"][-1], out)
    assert len(states["w"]) == len(own["w"]) > 2
    for s, o in zip(states["w"], own["w"], strict=True):
        assert torch.equal(s[0], o[0]), "the person's states are the field's"
        torch.testing.assert_close(s[1] - s[0], torch.full_like(s[0], 0.1))


def test_a_scopes_carry_is_saved_and_a_file_without_one_means_the_field(tiny_backend, tmp_path):
    people = _people(tiny_backend, 2)
    adapter = _person_adapter(tiny_backend, people[:1], seed=5)
    adapter.set_scope(Scope(people[:1], 0.7, 1.3, carry="parallel"))
    loaded = ODEAdapter.load(adapter.save(tmp_path / "a.safetensors"), tiny_backend)
    assert loaded.scope.carry == "parallel"
    assert Scope.from_saved(people[:1], '{"inner": 0.7, "outer": 1.3}').carry == "field"
    with pytest.raises(ValueError, match="carry"):
        Scope(people[:1], 0.5, 1.0, carry="sideways")


def test_a_scope_with_a_metric_measures_distance_after_its_linear_map_and_keeps_it_in_the_file(tiny_backend, tmp_path):
    people = _people(tiny_backend, 3)
    d = people.shape[1]
    metric = torch.diag(torch.linspace(0.2, 3.0, d))  # short along the first axes, long along the last
    scope = Scope(people[:1], 0.5, 1.0, "parallel", metric)
    torch.testing.assert_close(scope.distance(people), (people @ metric.T - people[:1] @ metric.T).norm(dim=1))
    step = torch.zeros(2, d)
    step[0, 0], step[1, -1] = 1.0, 1.0  # the same latent step, along a short and along a long axis
    near = scope.distance(people[:1] + step)
    assert near[0] < 0.5 < 1.0 < near[1], "inside along the short axis, outside along the long one"
    adapter = _person_adapter(tiny_backend, people[:1], seed=6)
    adapter.set_scope(scope)
    loaded = ODEAdapter.load(adapter.save(tmp_path / "a.safetensors"), tiny_backend)
    assert torch.equal(loaded.scope.metric, metric) and loaded.scope.carry == "parallel"
    assert torch.equal(loaded.transform("w", people[:1] + step, 1.0), adapter.transform("w", people[:1] + step, 1.0))
    with pytest.raises(ValueError, match="metric"):
        Scope(people[:1], 0.5, 1.0, metric=torch.eye(d + 1))
    with pytest.raises(ValueError, match="metric"):
        Scope.from_saved(people[:1], scope.to_json())  # the file says whitened, and no matrix came with it


def test_routed_requests_with_metric_scopes_draw_exactly_the_plain_composition(embedded):
    log, people = _log(embedded, 4)
    metric = torch.diag(torch.linspace(0.5, 1.5, people.shape[1]))
    for r in log.requests:
        s = r.adapter.scope
        r.adapter.set_scope(Scope(s.centres, s.inner, s.outer, "parallel", metric))
    latents = torch.cat([people, people + 0.05, embedded.sample_latents(3, torch.Generator().manual_seed(8))])
    assert torch.equal(_draw(embedded, log, latents), _draw(embedded, log.activations(), latents))


def test_a_scope_needs_a_latent_site(tiny_backend):
    conv_only = ODEAdapter.for_model(tiny_backend, ["b8"], ODEConfig(hidden=4))
    with pytest.raises(ValueError, match="latent sites"):
        conv_only.set_scope(Scope(torch.zeros(1, 32), 0.5, 1.0))


def _log(backend, n: int) -> tuple[RequestLog, torch.Tensor]:
    people = _people(backend, n)
    log = RequestLog.for_model(backend)
    for i in range(n):
        log.add(_person_adapter(backend, people[i:i + 1], seed=10 + i), label=f"person {i}")
    return log, people


def _draw(backend, log_or_acts, latents):
    views = backend.canonical_views(len(latents))
    with torch.no_grad():
        if isinstance(log_or_acts, RequestLog):
            with log_or_acts.active(backend):
                return backend.render(latents, views)
        with active(backend, log_or_acts):
            return backend.render(latents, views)


def test_routed_requests_draw_exactly_what_the_plain_composition_draws(embedded):
    log, people = _log(embedded, 5)
    latents = torch.cat([people, embedded.sample_latents(3, torch.Generator().manual_seed(8))])
    assert torch.equal(_draw(embedded, log, latents), _draw(embedded, log.activations(), latents))


def test_each_person_is_moved_by_their_own_request_and_nobody_else_moves(embedded):
    log, people = _log(embedded, 4)
    bystanders = people.mean(0, keepdim=True) + 100  # out of every scope
    everyone = torch.cat([people, bystanders])
    base = _draw(embedded, [], everyone)
    drawn = _draw(embedded, log, everyone)
    for i in range(4):
        alone = _draw(embedded, [(log.requests[i].adapter, log.requests[i].t)], everyone)
        assert torch.equal(drawn[i], alone[i])
        assert not torch.equal(drawn[i], base[i])
    assert torch.equal(drawn[4], base[4])


def test_a_log_is_restored_bit_exact_from_its_file(embedded, tmp_path):
    log, people = _log(embedded, 3)
    log.set_u("r0002", 0.5)
    loaded = RequestLog.load(log.save(tmp_path / "model.requests.safetensors"), embedded)
    assert loaded.keys() == log.keys()
    assert [(r.label, r.u, r.created) for r in loaded.requests] == [(r.label, r.u, r.created) for r in log.requests]
    for a, b in zip(loaded.requests, log.requests, strict=True):
        assert a.adapter.digest() == b.adapter.digest()
    assert torch.equal(_draw(embedded, loaded, people), _draw(embedded, log, people))


def test_removing_request_j_gives_exactly_the_model_without_it(embedded, tmp_path):
    log, people = _log(embedded, 4)
    without = RequestLog.for_model(embedded)
    for r in log.requests:
        if r.key != "r0003":
            without.add(r.adapter, r.label, r.u, r.key, r.created)
    latents = torch.cat([people, embedded.sample_latents(4, torch.Generator().manual_seed(9))])
    log.remove("r0003")
    assert log.keys() == ["r0001", "r0002", "r0004"]
    assert torch.equal(_draw(embedded, log, latents), _draw(embedded, without, latents))
    reloaded = RequestLog.load(log.save(tmp_path / "m.safetensors"), embedded)
    assert torch.equal(_draw(embedded, reloaded, latents), _draw(embedded, without, latents))
    assert log.add(log.requests[0].adapter, "again").key == "r0005"  # keys are never reused within a log


def test_a_log_refuses_another_base_models_adapter_and_file(tiny_backend, tmp_path):
    from tests.conftest import TinyBackend

    other = TinyBackend(seed=1)
    log, _ = _log(tiny_backend, 1)
    stranger = ODEAdapter.for_model(other, ["w"], ODEConfig(hidden=4))
    with pytest.raises(AdapterMismatchError, match="belongs to base model"):
        log.add(stranger)
    path = log.save(tmp_path / "m.safetensors")
    with pytest.raises(AdapterMismatchError, match="was made for base model"):
        RequestLog.load(path, other)


def test_a_log_refuses_duplicate_or_odd_keys_and_slider_positions_out_of_range(tiny_backend):
    log, people = _log(tiny_backend, 1)
    adapter = _person_adapter(tiny_backend, people[:1], seed=3)
    with pytest.raises(ValueError, match="already has"):
        log.add(adapter, key="r0001")
    with pytest.raises(ValueError, match="request key"):
        log.add(adapter, key="../etc")
    with pytest.raises(ValueError, match="slider position"):
        log.add(adapter, u=1.5)
    with pytest.raises(KeyError, match="no request"):
        log.remove("r0099")


def test_a_file_that_is_not_a_log_gets_a_clear_message(tiny_backend, tmp_path):
    adapter_file = _person_adapter(tiny_backend, _people(tiny_backend, 1), seed=4).save(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="not a legato request log"):
        RequestLog.load(adapter_file)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable safetensors request log"):
        RequestLog.load(tmp_path / "junk.safetensors")
