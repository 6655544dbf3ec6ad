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
