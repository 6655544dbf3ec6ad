"""Unlearning methods are registered classes: a new one is one class and one registry line, and runs through the
same API as every other (here on the tiny random backend)."""

import pytest
import torch

from legato_core.adapters import active_adapters
from legato_core.baselines import METHODS, run_method
from legato_core.baselines.methods import LegatoWithoutTrajectory, LowRank, register
from legato_core.unlearning import ForgetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class RankOneSlider(LowRank):
    """A method defined outside the library: a rank-1 low-rank slider."""

    name = "rank-one-slider"
    default_lr = 3e-3

    def __init__(self):
        super().__init__(rank=1)


@pytest.fixture
def registered():
    register(RankOneSlider)  # the one registry line
    yield RankOneSlider
    METHODS.pop(RankOneSlider.name)


def test_a_method_defined_in_a_test_file_runs_through_the_common_api(registered, tiny_backend):
    w = tiny_backend.sample_latents(1, torch.Generator().manual_seed(0))
    v = tiny_backend.canonical_views(2)
    base = tiny_backend.render(w.expand(2, -1), v)
    res = run_method("rank-one-slider", tiny_backend, w, ForgetConfig(steps=2))
    sites = [m for m in tiny_backend.adapter_sites.values() if m.adapter_kind == "conv"]  # feature maps only
    assert res.trainable_parameters == sum(2 * m.channels for m in sites)  # down + up, rank 1
    with res.knob.at(0.0) as model:
        assert torch.equal(model.render(w.expand(2, -1), v), base)
    with res.knob.at(1.0) as model:
        assert not torch.equal(model.render(w.expand(2, -1), v), base)
    res.close()
    assert active_adapters() == () and torch.equal(tiny_backend.render(w.expand(2, -1), v), base)


def test_registering_a_name_twice_is_refused(registered):
    with pytest.raises(ValueError, match="already registered"):
        register(RankOneSlider)


def test_every_registered_method_says_its_learning_rate():
    assert {"legato", "legato-no-trajectory", "legato-robust", "guide", "guide-robust", "salun", "uno", "uno-s",
            "lora"} <= set(METHODS)
    assert all(cls.default_lr > 0 for cls in METHODS.values())


def test_the_trajectory_ablation_changes_only_the_trajectory_weight():
    cfg = ForgetConfig()
    ablated = LegatoWithoutTrajectory().configure(ForgetConfig())
    assert ablated.weights.trajectory == 0 and cfg.weights.trajectory > 0
    assert {**vars(ablated.weights), "trajectory": cfg.weights.trajectory} == vars(cfg.weights)
    assert ablated.steps == cfg.steps and ablated.lr == cfg.lr and ablated.ode == cfg.ode


def test_full_fine_tunes_train_a_copy_and_leave_the_base_alone(tiny_backend):
    w = tiny_backend.sample_latents(1, torch.Generator().manual_seed(1))
    v = tiny_backend.canonical_views(2)
    base = tiny_backend.render(w.expand(2, -1), v)
    for name in ("guide", "salun", "uno-s"):
        res = run_method(name, tiny_backend, w, ForgetConfig(steps=2), lr=1e-2)
        with res.knob.at(None) as model:
            assert model is tiny_backend
        with res.knob.at(1.0) as model:
            assert model is not tiny_backend and not torch.equal(model.render(w.expand(2, -1), v), base)
        res.close()
    assert torch.equal(tiny_backend.render(w.expand(2, -1), v), base)
