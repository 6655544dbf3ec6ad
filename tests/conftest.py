"""Shared fixtures. ``tiny_backend`` is a randomly initialised, tiny generator behind the backend contract,
so engine mechanics are tested without shipped weights; tests that need trained assets use ``embedded``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

# isort: off
import legato_core.openmp  # noqa: F401 - sets the OpenMP wait policy; must run before torch loads
# isort: on

import pytest
import torch
from torch import nn

from legato_core.faceworld import VIEW_DIM, random_view_vectors
from legato_core.generator.modeling import GeneratorConfig, StyleFaceGenerator
from legato_core.identity.model import IdentityModel

torch.set_num_threads(2)


class TinyBackend(nn.Module):
    """A random 16-px style generator that meets the whole backend contract (``backends.base``)."""

    name = "tiny"
    base_model_id = "tests/tiny"
    objective = "image"
    face_world = False
    has_views = True
    image_size = 16
    reads_whole_photo = False
    renders_fast = True

    @classmethod
    def from_options(cls, seed: int = 0):
        return cls(seed)

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        cfg = GeneratorConfig(embedding_dim=16, view_dim=VIEW_DIM, w_dim=32, view_code_dim=16, mapping_layers=2,
                              channels={4: 32, 8: 16, 16: 8})
        self.generator = StyleFaceGenerator(cfg).eval()
        self.identity = IdentityModel("arcface", {"embedding_dim": 16, "widths": (8, 8, 8, 8)}).eval()
        self.identity.threshold = 0.5
        for p in self.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            self.generator.fit_prior(torch.randn(256, 16))

    w_avg = property(lambda self: self.generator.w_avg)
    adapter_sites = property(lambda self: self.generator.adapter_sites)
    forget_sites = property(lambda self: list(self.generator.adapter_sites))

    def weight_hash(self):
        return self.generator.weight_hash()

    def parameter_count(self):
        return sum(p.numel() for p in self.generator.parameters())

    def prepare_adapter(self, adapter):
        pass

    def synthesis_parameters(self):
        return list(self.generator.blocks.parameters())

    def sample_latents(self, n, generator=None):
        return self.generator.sample_latents(n, generator)

    def sample_views(self, n, generator=None):
        return random_view_vectors(n, generator)

    def canonical_views(self, n):
        return random_view_vectors(n, torch.Generator().manual_seed(3))

    def synthesize(self, latent, view, return_features=False):
        return self.generator.synthesize(latent, view, return_features)

    def render(self, latent, view):
        return self.generator.render(latent, view)

    def loss_identity_model(self):
        return self.identity

    def identity_networks(self):
        return [self.identity]

    def face_crop(self):
        from legato_core.faces import FaceCrop

        return FaceCrop.arcface(16)

    def report_sizes(self, eval_samples=None):
        n = eval_samples or 16
        return {"n_views": 2, "curve_points": 3, "n_retain": n, "n_fd": n, "pixel_others": 4}

    def describe(self):
        return {"base_model_id": self.base_model_id, "device": "cpu", "dtype": "torch.float32"}

    def label(self, model_path=None):
        return f"{self.name} test generator" + (f" from {model_path}" if model_path else "")

    def invert(self, images):
        """A crude inversion (the prior's nearest of 64 latents in pixels, in the first canonical view): enough
        for mechanics that re-invert renders (view anchors, the dial's on-manifold measure)."""
        with torch.no_grad():
            pool = self.sample_latents(64, torch.Generator().manual_seed(99))
            view = self.canonical_views(1)
            renders = self.render(pool, view.expand(64, -1))
            small = torch.nn.functional.interpolate(images, size=renders.shape[-2:], mode="bilinear")
            best = (small[:, None] - renders[None]).abs().mean(dim=(2, 3, 4)).argmin(1)
        return pool[best].clone(), view.expand(len(images), -1).clone()


@pytest.fixture
def tiny_backend():
    return TinyBackend()


@pytest.fixture(scope="session")
def embedded():
    from legato_core.backends.embedded import EmbeddedFaceBackend

    return EmbeddedFaceBackend.from_pretrained()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine two OpenMP threads are ~100x slower.
    Modules of tiny-model tests opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server():
    """The Gradio app served on a free 127.0.0.1 port, as ``python app.py`` would; yields its local URL.

    One torch thread (the tests' clients and the server share 2 cores), a 3-view forgetting curve and the nearest
    substitute taken without checking its path: the UI is under test here, not the metric (screenshots, with
    $LEGATO_SCREENSHOTS, show the default). Skips when the shipped weights are missing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import app
        from legato_core.studio import get_resources

        get_resources()
    except FileNotFoundError as e:
        pytest.skip(f"trained weights are missing: {e}")
    app.STUDIO_OPTIONS["curve_views"] = 3
    if not os.environ.get("LEGATO_SCREENSHOTS"):
        from legato_core.unlearning import ForgetConfig
        from legato_core.unlearning.targets import TargetConfig

        app.STUDIO_OPTIONS["default_config"] = ForgetConfig(steps=app.DEFAULT_STEPS,
                                                            target=TargetConfig(path_candidates=0))
    demo = app.build_demo()
    _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_port=free_port(), quiet=True,
                                    max_file_size="5mb", **app.launch_options())
    yield url
    app.close_sessions()
    app.STUDIO_OPTIONS.pop("curve_views", None)
    app.STUDIO_OPTIONS.pop("default_config", None)
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture
def load_script():
    """scripts/<name>.py as a module (scripts are not a package), for tests of their pure functions."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
