"""Cheaper generator architectures: factored upsampling convs, position features on a coarse grid, and the
conversion that carries a trained generator over to them (then resumes its training)."""

import json
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from legato_core.faceworld.factors import FACTOR_DIM
from legato_core.faceworld.landmarks import LANDMARKS
from legato_core.generator.conversion import convert_checkpoint, convert_generator, factor_kernel
from legato_core.generator.factor_training import FactorTrainingConfig, train_factor_generator, training_batch
from legato_core.generator.modeling import GeneratorConfig, ModulatedConv, StyleFaceGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def small_config(**changes) -> GeneratorConfig:
    return GeneratorConfig(**{**asdict(GeneratorConfig(
        embedding_dim=FACTOR_DIM, conditioning="factors", coord_octaves=2, w_dim=32, view_code_dim=16,
        mapping_layers=2, channels={4: 32, 8: 16, 16: 16, 32: 12, 64: 8}, layout_landmarks=len(LANDMARKS))),
        **changes})


def trained_looking(config: GeneratorConfig, seed: int = 0) -> StyleFaceGenerator:
    """Random weights with non-trivial styles and layout weights (a fresh generator's are all ones / zeros)."""
    torch.manual_seed(seed)
    g = StyleFaceGenerator(config).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if "affine.weight" in name or name.endswith("layout.weight"):
                p.normal_(0, 0.1)
    return g


def inputs(g: StyleFaceGenerator, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    f, v, _ = training_batch(0, n, seed=seed)
    with torch.no_grad():
        return g.map_identity(f), v


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).square().mean().clamp_min(1e-20)))


@pytest.mark.parametrize("demodulate,activate", [(True, True), (False, True), (False, False)])
def test_a_pointwise_modulated_conv_is_the_convolution_it_replaces(demodulate, activate):
    torch.manual_seed(0)
    conv = ModulatedConv(6, 5, style_dim=4, kernel=1, demodulate=demodulate, activate=activate)
    torch.nn.init.normal_(conv.affine.weight, std=0.5)
    x, style = torch.randn(3, 6, 7, 7), torch.randn(3, 4)
    s = conv.affine(style)
    y = F.conv2d(x * s[:, :, None, None], conv.weight * conv.scale)
    gain = 2**0.5 if activate else 1.0
    if demodulate:
        y = y * torch.rsqrt(s.square() @ (conv.weight * conv.scale).square().sum((2, 3)).T + 1e-8)[:, :, None, None]
    y = (y + conv.bias[None, :, None, None]) * gain
    expected = F.leaky_relu(y, 0.2) if activate else y
    assert torch.allclose(conv(x, style), expected, atol=1e-5)


def test_a_full_rank_factored_upsampling_conv_draws_the_same_faces():
    source = trained_looking(small_config())
    target = convert_generator(source, small_config(upsample_rank={64: 12, 32: 16}), *inputs(source, 16))
    assert target.blocks[4].conv1.reduce.shape == (12, 12)
    w, v = inputs(source, 4, seed=1)
    with torch.no_grad():
        assert psnr(source.render(w, v), target.render(w, v)) > 80


def test_the_factorisation_fits_the_inputs_the_conv_sees_better_than_a_plain_svd():
    torch.manual_seed(0)
    weight = torch.randn(4, 10, 3, 3)
    # inputs that live mostly in 3 directions, with a little everywhere else
    basis = torch.linalg.qr(torch.randn(10, 10))[0]
    spread = torch.tensor([10.0, 8.0, 6.0] + [0.1] * 7)
    cov = (basis * spread.square()) @ basis.T
    x = (torch.randn(5000, 10) * spread) @ basis.T
    m = weight.permute(0, 2, 3, 1).reshape(36, 10)

    def error(kernel, reduce):
        approx = torch.einsum("orij,rc->oijc", kernel, reduce).reshape(36, 10)
        return ((m - approx) @ x.T).square().mean().item()

    aware = error(*factor_kernel(weight, cov.double(), rank=3))
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    plain = error((u[:, :3] * s[:3]).view(4, 3, 3, 3).permute(0, 3, 1, 2), vh[:3])
    assert aware < 0.05 * plain


def test_positions_on_a_coarse_grid_change_the_faces_little_and_are_shared_between_blocks():
    source = trained_looking(small_config())
    coarse = convert_generator(source, small_config(position_resolution=16), *inputs(source))
    w, v = inputs(source, 4, seed=2)
    with torch.no_grad():
        a, b = source.render(w, v), coarse.render(w, v)
    assert not torch.equal(a, b) and psnr(a, b) > 25
    same = convert_generator(source, small_config(position_resolution=64), *inputs(source))
    with torch.no_grad():
        assert torch.allclose(same.render(w, v), a, atol=1e-5)  # a cap above every block changes nothing


def test_a_converted_checkpoint_resumes_training_in_its_new_architecture(tmp_path):
    cfg = FactorTrainingConfig(steps=2, batch_size=2, checkpoint_every=2, eval_every=2, eval_images=2,
                               prior_samples=16, generator=asdict(small_config()))
    train_factor_generator(cfg, tmp_path / "source", log=lambda m: None)
    info = convert_checkpoint(tmp_path / "source", tmp_path / "fast", {"upsample_rank": {64: 4}},
                              calibration=8)
    assert info["step"] == 2 and info["changes"] == {"upsample_rank": {64: 4}} and info["psnr_vs_source_db"] > 15
    state = json.loads((tmp_path / "fast" / "state.json").read_text())
    assert state["config"]["generator"]["upsample_rank"] == {"64": 4} and state["conversions"][0]["step"] == 2
    more = FactorTrainingConfig(**{**cfg.__dict__, "steps": 4})
    resumed = train_factor_generator(more, tmp_path / "fast", resume=True, log=lambda m: None)
    assert resumed.config.upsample_rank == {64: 4} and resumed.blocks[4].conv1.reduce.shape == (4, 12)
    after = json.loads((tmp_path / "fast" / "state.json").read_text())
    assert after["step"] == 4 and after["conversions"] == state["conversions"]  # the history survives a resume
