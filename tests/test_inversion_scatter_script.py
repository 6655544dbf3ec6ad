"""scripts/inversion_scatter.py: the whitening of where a person's other photos invert, for adapter scopes."""

import pytest
import torch


def test_the_whitening_makes_each_persons_scatter_round_and_ignores_where_the_people_are(load_script):
    m = load_script("inversion_scatter")
    g = torch.Generator().manual_seed(0)
    people, photos, d = 300, 6, 8
    spread = torch.linspace(0.1, 3.0, d)  # photos of one person scatter 30x more along the last axis
    centres = 50 * torch.randn(people, 1, d, generator=g)  # people far apart: must not count as scatter
    latents = centres + spread * torch.randn(people, photos, d, generator=g)
    matrix, values = m.whitening(latents, ridge=0.0)
    white = (latents - latents.mean(1, keepdim=True)).reshape(-1, d) @ matrix.T
    cov = white.T @ white / (len(white) - people)
    torch.testing.assert_close(cov, torch.eye(d), atol=0.12, rtol=0)
    assert values[0] == pytest.approx(9.0, rel=0.15) and values[-1] == pytest.approx(0.01, rel=0.3)
    ridged, _ = m.whitening(latents, ridge=0.3)
    assert torch.linalg.matrix_norm(ridged, 2) < torch.linalg.matrix_norm(matrix, 2), "the ridge caps the gain"


def test_it_refuses_ids_outside_the_validation_range(load_script, monkeypatch):
    m = load_script("inversion_scatter")
    monkeypatch.setattr("sys.argv", ["inversion_scatter.py", "--first-identity", "1000000", "--people", "2"])
    with pytest.raises(SystemExit, match="validation ids only"):
        m.main()
