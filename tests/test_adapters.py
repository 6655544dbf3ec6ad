"""ODE adapters: exact identity at init and at t = 0, injection by site name, persistence, refusals."""

import pytest
import torch

from legato_core.adapters import AdapterMismatchError, AdapterStack, ODEAdapter, ODEConfig, solve
from legato_core.adapters.ode import ConvVectorField


def _adapter(backend, **cfg):
    sites = {k: m.channels for k, m in backend.adapter_sites.items()}
    return ODEAdapter(sites, ODEConfig(**cfg), backend.base_model_id, backend.weight_hash())


def _randomise(adapter, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _inputs(backend, n=3):
    g = torch.Generator().manual_seed(1)
    return backend.sample_latents(n, g), backend.sample_views(n, g)


def test_vector_field_is_zero_at_init():
    f = ConvVectorField(8, 16)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(f(torch.tensor(0.0), x), torch.zeros_like(x))


def test_zero_initialised_adapter_leaves_the_generator_unchanged(tiny_backend):
    w, v = _inputs(tiny_backend)
    base = tiny_backend.render(w, v)
    adapter = _adapter(tiny_backend).attach(tiny_backend)
    assert torch.equal(tiny_backend.render(w, v), base)
    adapter.detach()


def test_t_zero_is_the_base_bit_for_bit_and_t_changes_output(tiny_backend):
    w, v = _inputs(tiny_backend)
    base = tiny_backend.render(w, v)
    adapter = _adapter(tiny_backend)
    _randomise(adapter)
    adapter.attach(tiny_backend)
    with adapter.at(0.0):
        assert torch.equal(tiny_backend.render(w, v), base)
    with adapter.at(1.6):
        assert not torch.allclose(tiny_backend.render(w, v), base)
    adapter.detach()
    assert torch.equal(tiny_backend.render(w, v), base), "detach must restore the base exactly"


def test_euler_defaults_take_four_steps_of_0_4():
    f = ConvVectorField(4, 8)
    _randomise(f)
    x = torch.randn(1, 4, 3, 3)
    out, states = solve(f, x, 1.6, ODEConfig(), return_states=True)
    assert len(states) == 5
    manual = x
    for _ in range(4):
        manual = manual + 0.4 * f(None, manual)
    assert torch.allclose(out, manual, atol=1e-5)


@pytest.mark.parametrize("t", [0.8000001, 0.7999999, 1.2 + 1e-7, 0.4 * 3, 1e-7, 0.3])
def test_any_t_in_range_solves_even_within_rounding_of_a_grid_point(t):
    """Slider and linspace values land within float32 rounding of multiples of the step: they must solve."""
    f = ConvVectorField(4, 8)
    _randomise(f, scale=0.1)
    x = torch.randn(1, 4, 3, 3)
    for method in ("euler", "rk4"):
        out = solve(f, x, t, ODEConfig(method=method))
        near = solve(f, x, round(t, 4) if t > 1e-3 else 0.0, ODEConfig(method=method))
        assert torch.allclose(out, near, atol=1e-3)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "dopri5"])
def test_every_solver_runs_and_agrees_roughly(method):
    f = ConvVectorField(4, 8)
    _randomise(f, scale=0.1)
    x = torch.randn(1, 4, 3, 3)
    ref = solve(f, x, 1.0, ODEConfig(method="rk4", step_size=0.05))
    out = solve(f, x, 1.0, ODEConfig(method=method, step_size=0.1))
    assert torch.allclose(out, ref, atol=0.05)


def test_unknown_solver_and_negative_t_are_refused(tiny_backend):
    with pytest.raises(ValueError, match="solver"):
        ODEConfig(method="leapfrog")
    adapter = _adapter(tiny_backend)
    with pytest.raises(ValueError, match="t must be"):
        adapter.set_t(-0.1)
    with pytest.raises(ValueError, match="t must be"):
        adapter.set_t(5.0)
    adapter.set_t(torch.tensor(1.6).item())  # float32 rounding of t_max is t_max, not out of range
    assert adapter.t == 1.6


def test_intermediate_t_renders_without_retraining(tiny_backend):
    w, v = _inputs(tiny_backend)
    adapter = _adapter(tiny_backend)
    _randomise(adapter, scale=0.1)
    adapter.attach(tiny_backend)
    outs = []
    for t in (0.0, 0.5, 1.0, 1.6):
        with adapter.at(t):
            outs.append(tiny_backend.render(w, v))
    adapter.detach()
    dists = [(o - outs[0]).abs().mean().item() for o in outs]
    assert dists[0] == 0 and dists[1] > 0 and dists[3] > dists[1]


def test_save_load_roundtrip_keeps_outputs_and_metadata(tiny_backend, tmp_path):
    w, v = _inputs(tiny_backend)
    adapter = _adapter(tiny_backend, t_end=1.2)
    adapter.description = {"target": {"kind": "extrapolated"}}
    _randomise(adapter)
    adapter.attach(tiny_backend)
    expected = tiny_backend.render(w, v)
    adapter.detach()
    path = adapter.save(tmp_path / "a.safetensors")
    assert path.stat().st_size < 2_000_000
    loaded = ODEAdapter.load(path, tiny_backend)
    assert loaded.config.t_end == 1.2 and loaded.description["target"]["kind"] == "extrapolated"
    assert loaded.base_weight_hash == tiny_backend.weight_hash()
    assert loaded.created
    loaded.attach(tiny_backend)
    assert torch.equal(tiny_backend.render(w, v), expected)
    loaded.detach()


def test_loading_onto_a_different_base_fails_clearly(tiny_backend, tmp_path):
    from conftest import TinyBackend

    path = _adapter(tiny_backend).save(tmp_path / "a.safetensors")
    other = TinyBackend(seed=1)
    with pytest.raises(AdapterMismatchError, match="trained for base model"):
        ODEAdapter.load(path, other)


def test_not_an_adapter_file_is_refused(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a readable safetensors adapter"):
        ODEAdapter.load(bad)


def test_two_adapters_at_once_each_with_its_own_t(tiny_backend):
    w, v = _inputs(tiny_backend)
    base = tiny_backend.render(w, v)
    stack = AdapterStack(tiny_backend)
    a, b = _adapter(tiny_backend), _adapter(tiny_backend)
    _randomise(a, 0)
    _randomise(b, 1)
    stack.add("alice", a)
    stack.add("bob", b)
    stack.set_t(alice=0.0, bob=0.0)
    assert torch.equal(tiny_backend.render(w, v), base)
    stack.set_t(alice=1.0, bob=0.0)
    only_a = tiny_backend.render(w, v)
    stack.set_t(alice=1.0, bob=1.0)
    both = tiny_backend.render(w, v)
    assert not torch.allclose(only_a, base) and not torch.allclose(both, only_a)
    stack.remove("bob")
    assert torch.equal(tiny_backend.render(w, v), only_a)
    stack.remove("alice")
    assert torch.equal(tiny_backend.render(w, v), base)


def test_attaching_twice_is_refused(tiny_backend):
    adapter = _adapter(tiny_backend).attach(tiny_backend)
    with pytest.raises(RuntimeError, match="already attached"):
        adapter.attach(tiny_backend)
    adapter.detach()


@pytest.mark.parametrize("t", [0.2, 0.4, 1.0, 1.4, 1.6])
def test_default_euler_loop_matches_torchdiffeq(t):
    """The default solver runs a plain loop (no stacked solution buffer); it must be torchdiffeq's Euler."""
    from torchdiffeq import odeint

    from legato_core.adapters.ode import ConvVectorField, ODEConfig, solve, time_grid

    torch.manual_seed(0)
    field = ConvVectorField(6, 16)
    torch.nn.init.normal_(field.out.weight, std=0.1)
    x = torch.randn(2, 6, 8, 8)
    ref = odeint(field, x, time_grid(t, 0.4), method="euler", options={"step_size": 0.4})
    out, states = solve(field, x, t, ODEConfig(hidden=16), return_states=True)
    assert torch.equal(out, ref[-1])
    assert len(states) == len(ref) and all(torch.equal(a, b) for a, b in zip(states, ref, strict=True))
