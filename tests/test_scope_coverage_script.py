"""scripts/scope_coverage.py: how many of a person's other photos a scope holds, against the prior it takes along."""

import pytest
import torch


def test_a_row_counts_photos_beyond_the_radius_people_missing_any_and_prior_people_inside(load_script):
    m = load_script("scope_coverage")
    photos = torch.tensor([[0.5, 0.6, 0.7, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5, 0.5]])
    prior = torch.tensor([[0.4, 0.9, 1.2, 2.0], [0.8, 1.5, 1.6, 1.7]])
    row = m.coverage(photos, prior, 0.65)
    assert row["photos_beyond"] == pytest.approx(0.1) and row["people_with_a_photo_beyond"] == 0.5
    assert row["prior_within"] == pytest.approx(1 / 8)
    assert "| latent | 0.65 | 10.0 % | 50.0 % | 12.500 % |" in m.markdown({"latent": [row]}, 2, "cmd")


def test_distances_go_through_the_metric_as_a_scope_measures_them(load_script):
    from legato_core.adapters.scope import Scope

    m = load_script("scope_coverage")
    g = torch.Generator().manual_seed(0)
    centres, x = torch.randn(3, 6, generator=g), torch.randn(4, 6, generator=g)
    metric = torch.diag(torch.linspace(0.5, 2.0, 6))
    torch.testing.assert_close(m.nearest(x, centres, metric), Scope(centres, 0.5, 1.0, metric=metric).distance(x))
    torch.testing.assert_close(m.nearest(x, centres, None), Scope(centres, 0.5, 1.0).distance(x))
