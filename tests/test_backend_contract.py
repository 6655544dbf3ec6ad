"""Every registered backend, and the tiny random models that stand in for the real ones, keeps the whole backend
contract (``legato_core.backends.base.GeneratorBackend``); a new backend is one class and one registry line."""

import pytest
import torch
from conftest import TinyBackend

from legato_core.adapters import ODEAdapter, active
from legato_core.backends.base import GeneratorBackend
from legato_core.backends.registry import BACKENDS, backend_class, backend_label, load_backend, register_backend
from legato_core.unlearning import ForgetConfig, train_adapter
from legato_core.unlearning.step_objectives import OBJECTIVES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def every_backend(tmp_path_factory):
    """One instance of each registered backend: the shipped embedded one, and the diffusers classes on tiny
    random checkpoints (skipped where diffusers is not installed)."""
    pytest.importorskip("diffusers")
    from legato_core.backends.testing import (
        build_tiny_arc2face,
        build_tiny_ddpm,
        build_tiny_insightface_pack,
        stand_in_recognition,
    )

    root = tmp_path_factory.mktemp("contract")
    pack = build_tiny_insightface_pack(root / "pack")
    fast = {"num_inference_steps": 2, "device": "cpu"}
    return {
        "embedded": load_backend("embedded"),
        "arc2face": load_backend("arc2face", model_path=build_tiny_arc2face(root / "models", root / "sd15"),
                                 base_model_path=root / "sd15", insightface_pack=pack, cache_steps=2, cache_seeds=1,
                                 retain_seeds=1, **fast, **stand_in_recognition(pack)),
        "ddpm": load_backend("ddpm", model_path=build_tiny_ddpm(root / "ddpm"), retain_seeds=1, **fast),
    }


def test_the_registry_covers_every_shipped_backend(every_backend):
    assert set(every_backend) == set(BACKENDS) - {"tiny"}
    for name, backend in every_backend.items():
        assert isinstance(backend, backend_class(name)) and backend.name == name


@pytest.mark.parametrize("name", ["embedded", "arc2face", "ddpm"])
def test_each_backend_keeps_the_contract(every_backend, name):
    check_contract(every_backend[name])


def check_contract(backend) -> None:
    assert isinstance(backend, GeneratorBackend)
    assert backend.objective in OBJECTIVES
    assert isinstance(backend.face_world, bool) and isinstance(backend.has_views, bool)
    assert isinstance(backend.reads_whole_photo, bool) and isinstance(backend.renders_fast, bool)
    assert backend.image_size > 0 and isinstance(backend.identity_networks(), list)  # DDPM without a pack: none
    sizes = backend.report_sizes(8)
    assert sizes["n_retain"] == 8 and sizes["n_fd"] == 8
    assert isinstance(backend.label(), str) and backend.label("/some/where").count("/some/where") == 1
    assert {"base_model_id", "device", "dtype"} <= set(backend.describe())
    crop = backend.face_crop()
    assert crop.size > 0
    g = torch.Generator().manual_seed(0)
    w, v = backend.sample_latents(2, g), backend.canonical_views(2)
    assert w.shape[0] == 2 and backend.w_avg.shape == w.shape[1:]
    with torch.no_grad():
        img = backend.render(w, v)
    assert img.shape == (2, 3, backend.image_size, backend.image_size)
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    assert backend.forget_sites and set(backend.forget_sites) <= set(backend.adapter_sites)
    adapter = ODEAdapter.for_model(backend)
    with torch.no_grad(), active(backend, [(adapter, 0.8)]):  # a zero adapter: the base, through the hooks
        assert torch.allclose(backend.render(w, v), img, atol=1e-6)


class ToyBackend(TinyBackend):
    """A backend written outside the library (here: the tiny test generator under its own name)."""

    name = "toy"
    base_model_id = "tests/toy"


@pytest.fixture
def toy_registered():
    register_backend(ToyBackend)  # the one registry line
    yield
    BACKENDS.pop("toy")


def test_a_backend_defined_in_a_test_file_loads_trains_and_renders(toy_registered):
    backend = load_backend("toy", seed=3)
    check_contract(backend)
    assert backend_label(backend) == "toy test generator"
    w = backend.sample_latents(1, torch.Generator().manual_seed(1))
    res = train_adapter(backend, w, ForgetConfig(steps=2))
    with torch.no_grad(), active(backend, [(res.adapter, 1.6)]):
        out = backend.render(w, backend.canonical_views(1))
    assert out.shape == (1, 3, 16, 16)


def test_unknown_backends_name_the_registered_ones():
    with pytest.raises(ValueError, match="choose from"):
        load_backend("stylegan3")
