"""The embedded generator's contract: shapes, determinism, adapter sites, prior, and inversion."""

import pytest
import torch

from legato_core import faceworld
from legato_core.backends.base import GeneratorBackend
from legato_core.generator.evaluation import psnr
from legato_core.identity import load_identity_model


def test_backend_satisfies_the_engine_contract(embedded):
    assert isinstance(embedded, GeneratorBackend)
    sites = embedded.adapter_sites
    assert list(sites) == ["w", "b8", "b16", "b32", "b64"]  # the identity latent, then each block's features
    assert [s.resolution for s in sites.values()] == [0, 8, 16, 32, 64]
    assert all(s.channels > 0 for s in sites.values())
    assert embedded.w_avg.shape == (embedded.latent_dim,)
    assert embedded.parameter_count() <= 10_000_000


def test_rendering_is_deterministic_and_in_range(embedded):
    g = torch.Generator().manual_seed(0)
    w, v = embedded.sample_latents(4, g), embedded.sample_views(4, g)
    a, b = embedded.render(w, v), embedded.render(w, v)
    assert a.shape == (4, 3, 64, 64) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_seeded_sampling_is_reproducible(embedded):
    w1 = embedded.sample_latents(3, torch.Generator().manual_seed(5))
    w2 = embedded.sample_latents(3, torch.Generator().manual_seed(5))
    assert torch.equal(w1, w2)


def test_synthesis_is_differentiable_in_the_latent(embedded):
    w = embedded.sample_latents(1, torch.Generator().manual_seed(1)).requires_grad_(True)
    img, feat = embedded.synthesize(w, embedded.canonical_views(1), return_features=True)
    img.mean().backward()
    assert w.grad.abs().sum() > 0 and feat.shape[1] == embedded.adapter_sites["b64"].channels


def test_inversion_reproduces_a_held_out_face(embedded):
    judge = load_identity_model("judge")
    img = faceworld.render([200_010, 200_011], 0)
    w, v = embedded.invert(img)
    rec = embedded.render(w, v)
    assert (psnr(rec, img) > 18).all()
    assert (judge.similarity(img, rec) > judge.threshold).all()


def test_wrong_input_shapes_are_refused(embedded):
    with pytest.raises(ValueError, match="expected"):
        embedded.invert(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="expected w"):
        embedded.render(torch.zeros(2, embedded.latent_dim), torch.zeros(3, faceworld.VIEW_DIM))


def test_channels_last_layout_changes_speed_not_the_model(embedded, tmp_path):
    """Weights live channels-last for oneDNN; the saved file, the hash and the images are those of the model."""
    from legato_core.generator.modeling import StyleFaceGenerator

    gen = embedded.generator
    assert gen.blocks[1].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(2)
    w, v = embedded.sample_latents(3, g), embedded.sample_views(3, g)
    fast = gen.render(w, v)
    gen.save_pretrained(tmp_path)
    copy = StyleFaceGenerator.from_pretrained(tmp_path)
    assert copy.weight_hash() == gen.weight_hash()
    copy.to(memory_format=torch.contiguous_format)
    assert copy.weight_hash() == gen.weight_hash()
    assert torch.allclose(copy.render(w, v), fast, atol=1e-5)
