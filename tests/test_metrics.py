"""Judge-space statistics: the Fréchet distance between embedding sets."""

import numpy as np
import pytest
import torch
from scipy import linalg

from legato_core.metrics import frechet_distance


def test_frechet_distance_is_zero_for_one_sample_and_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g)
    b = a @ torch.randn(6, 6, generator=g) * 0.5 + 0.3
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    x, y = a.double().numpy(), b.double().numpy()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    textbook = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(textbook, rel=1e-6)
    assert frechet_distance(a, b + 1) > frechet_distance(a, b), "a mean shift adds distance"


def test_pixel_forgetting_sees_a_change_of_the_target_only():
    """A knob that repaints one latent (and nothing else) is 'forgetting in pixels'; its ratio is large and the
    others' PSNR infinite-ish; a knob that moves everyone has a ratio near 1."""
    from contextlib import contextmanager

    from legato_core.metrics import pixel_forgetting

    class FakeBackend:
        def __init__(self, shift_all: bool):
            self.shift_all = shift_all
            self.target = torch.full((1, 4), 2.0)

        def sample_latents(self, n, gen):
            return torch.rand(n, 4, generator=gen)

        def sample_views(self, n, gen):
            return torch.rand(n, 2, generator=gen)

        def render(self, lat, views, s=0.0):
            img = lat[:, :1, None, None].expand(-1, 3, 16, 16) / 8
            hit = torch.ones(len(lat)) if self.shift_all else (lat[:, 0] == 2.0).float()
            return (img + s * 0.3 * hit[:, None, None, None]).clamp(0, 1)

    class FakeKnob:
        def __init__(self, backend):
            self.backend = backend

        @contextmanager
        def at(self, s):
            b = self.backend

            class Model:
                def render(self, lat, views):
                    return b.render(lat, views, 0.0 if s is None else s)

            yield Model()

    only = FakeBackend(shift_all=False)
    rep = pixel_forgetting(only, FakeKnob(only), only.target, 1.0, torch.zeros(8, 2), n_others=16)
    assert rep["pixel_change_target"] == pytest.approx(0.3)
    assert rep["pixel_change_others"] == 0 and rep["pixel_change_ratio"] > 1e5
    assert rep["others_psnr_db_min"] >= 99 and len(rep["others_psnr_db_each"]) == 16
    everyone = FakeBackend(shift_all=True)
    rep = pixel_forgetting(everyone, FakeKnob(everyone), everyone.target, 1.0, torch.zeros(8, 2), n_others=16)
    assert rep["pixel_change_ratio"] == pytest.approx(1.0) and rep["others_psnr_db_mean"] < 15
    assert max(rep["others_psnr_db_each"]) < 15, "every other person moved"
