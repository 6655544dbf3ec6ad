"""ODE adapters: exact identity at init and at t = 0, activation by argument on named sites, isolation between
threads, persistence, refusals."""

import threading

import pytest
import torch
import torch.nn.functional as F

from legato_core.adapters import AdapterMismatchError, ODEAdapter, ODEConfig, active, active_adapters, solve
from legato_core.adapters.ode import ConvVectorField


def _adapter(backend, **cfg):
    return ODEAdapter.for_model(backend, config=ODEConfig(**cfg))


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


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_vector_field_is_its_two_1x1_convolutions_in_value_and_gradient(layout):
    torch.manual_seed(0)
    f = ConvVectorField(6, 16)
    torch.nn.init.normal_(f.out.weight, std=0.3)
    x = torch.randn(3, 6, 5, 7).contiguous(memory_format=layout).requires_grad_(True)
    y = f(torch.tensor(0.0), x)
    ref = F.conv2d(F.leaky_relu(F.conv2d(x, f.inp.weight, f.inp.bias), 0.2), f.out.weight, f.out.bias)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(y.square().sum(), [x, f.inp.weight, f.out.weight])
    refs = torch.autograd.grad(ref.square().sum(), [x, f.inp.weight, f.out.weight])
    for a, b in zip(grads, refs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_zero_initialised_adapter_leaves_the_generator_unchanged(tiny_backend):
    w, v = _inputs(tiny_backend)
    base = tiny_backend.render(w, v)
    with active(tiny_backend, [(_adapter(tiny_backend), 1.6)]):
        assert torch.equal(tiny_backend.render(w, v), base)


def test_t_zero_is_the_base_bit_for_bit_and_t_changes_output(tiny_backend):
    w, v = _inputs(tiny_backend)
    base = tiny_backend.render(w, v)
    adapter = _adapter(tiny_backend)
    _randomise(adapter)
    with active(tiny_backend, [(adapter, 0.0)]):
        assert torch.equal(tiny_backend.render(w, v), base)
    with active(tiny_backend, [(adapter, 1.6)]):
        assert not torch.allclose(tiny_backend.render(w, v), base)
        with active(tiny_backend, []):
            assert torch.equal(tiny_backend.render(w, v), base), "an inner empty block is the base model"
    assert torch.equal(tiny_backend.render(w, v), base), "leaving the block restores the base exactly"
    assert active_adapters() == ()


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
        adapter.check_intensity(-0.1)
    with pytest.raises(ValueError, match="t must be in"):
        with active(tiny_backend, [(adapter, 5.0)]):
            pass
    assert active_adapters() == ()
    assert adapter.check_intensity(torch.tensor(1.6).item()) == 1.6  # float32 rounding of t_max is t_max


def test_intermediate_t_renders_without_retraining(tiny_backend):
    w, v = _inputs(tiny_backend)
    adapter = _adapter(tiny_backend)
    _randomise(adapter, scale=0.1)
    outs = []
    for t in (0.0, 0.5, 1.0, 1.6):
        with active(tiny_backend, [(adapter, t)]):
            outs.append(tiny_backend.render(w, v))
    dists = [(o - outs[0]).abs().mean().item() for o in outs]
    assert dists[0] == 0 and dists[1] > 0 and dists[3] > dists[1]


def test_save_load_roundtrip_keeps_outputs_and_metadata(tiny_backend, tmp_path):
    w, v = _inputs(tiny_backend)
    adapter = _adapter(tiny_backend, t_end=1.2)
    adapter.description = {"target": {"kind": "extrapolated"}}
    _randomise(adapter)
    with active(tiny_backend, [(adapter, 1.2)]):
        expected = tiny_backend.render(w, v)
    path = adapter.save(tmp_path / "a.safetensors")
    assert path.stat().st_size < 2_000_000
    loaded = ODEAdapter.load(path, tiny_backend)
    assert loaded.config.t_end == 1.2 and loaded.description["target"]["kind"] == "extrapolated"
    assert loaded.base_weight_hash == tiny_backend.weight_hash()
    assert loaded.created
    with active(tiny_backend, [(loaded, 1.2)]):
        assert torch.equal(tiny_backend.render(w, v), expected)


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
    a, b = _adapter(tiny_backend), _adapter(tiny_backend)
    _randomise(a, 0)
    _randomise(b, 1)
    with active(tiny_backend, [(a, 0.0), (b, 0.0)]):
        assert torch.equal(tiny_backend.render(w, v), base)
    with active(tiny_backend, [(a, 1.0), (b, 0.0)]):
        only_a = tiny_backend.render(w, v)
    with active(tiny_backend, [(a, 1.0), (b, 1.0)]):
        both = tiny_backend.render(w, v)
    assert not torch.allclose(only_a, base) and not torch.allclose(both, only_a)
    with active(tiny_backend, [(a, 1.0)]):
        assert torch.equal(tiny_backend.render(w, v), only_a)


def test_an_adapter_for_another_base_is_refused_at_activation(tiny_backend):
    from conftest import TinyBackend

    adapter = _adapter(TinyBackend(seed=1))
    with pytest.raises(AdapterMismatchError, match="trained for base model"):
        with active(tiny_backend, [(adapter, 1.0)]):
            pass


def test_recording_yields_each_sites_solver_states(tiny_backend):
    w, v = _inputs(tiny_backend, 2)
    adapter = _adapter(tiny_backend)
    with active(tiny_backend, [(adapter, 1.6)], record=True) as states:
        tiny_backend.render(w, v)
    assert set(states) == set(tiny_backend.adapter_sites)
    assert all(len(s) == 5 for s in states.values())  # s_0 .. s_4: four Euler steps of 0.4


def test_two_threads_render_two_adapters_on_one_base_at_once(tiny_backend):
    """Intensity is an argument, not state on the base: concurrent renders equal sequential ones."""
    w, v = _inputs(tiny_backend, 4)
    a, b = _adapter(tiny_backend), _adapter(tiny_backend)
    _randomise(a, 0, 0.2)
    _randomise(b, 1, 0.2)
    jobs = {"a": (a, 0.7), "b": (b, 1.5)}
    expected = {}
    for name, (adapter, t) in jobs.items():
        with active(tiny_backend, [(adapter, t)]):
            expected[name] = tiny_backend.render(w, v)
    assert not torch.allclose(expected["a"], expected["b"])
    start, errors, mismatches = threading.Barrier(2), [], []

    def worker(name):
        adapter, t = jobs[name]
        try:
            start.wait(10)
            for _ in range(25):
                with active(tiny_backend, [(adapter, t)]):
                    out = tiny_backend.render(w, v)
                if not torch.equal(out, expected[name]):
                    mismatches.append(name)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and not mismatches
    assert torch.equal(tiny_backend.render(w, v), tiny_backend.render(w, v))
    assert active_adapters() == ()


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
