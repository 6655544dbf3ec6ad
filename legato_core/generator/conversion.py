"""Turn a trained generator into a cheaper architecture that starts out drawing (almost) the same faces.

Two changes are supported, both by config: factoring a block's upsampling conv into a 1x1 reduction before
the upsample and a smaller 3x3 conv after it (``GeneratorConfig.upsample_rank``), and computing position
features on a coarser grid (``position_resolution``). Every weight whose name and shape match is copied; a
factored conv gets the rank-r kernel that best reproduces the trained one *on the inputs it actually sees*
(a truncated SVD weighted by the input covariance measured on calibration renders), because a plain SVD of
the weights keeps directions the features never use. A short fine-tune then recovers what the cut lost.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .modeling import GeneratorConfig, ModulatedConv, StyleFaceGenerator


@torch.no_grad()
def input_covariance(model: StyleFaceGenerator, conv: ModulatedConv, w: torch.Tensor, view: torch.Tensor,
                     batch: int = 32) -> torch.Tensor:
    """(cin, cin) second moment of ``conv``'s modulated input over every pixel of the calibration renders."""
    moments: list[torch.Tensor] = []

    def hook(module, args):
        x, style = args
        xm = (x * module.affine(style)[:, :, None, None]).permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        moments.append(xm.T @ xm / xm.shape[0])

    handle = conv.register_forward_pre_hook(hook)
    try:
        for i in range(0, len(w), batch):
            model.synthesize(w[i:i + batch], view[i:i + batch])
    finally:
        handle.remove()
    return torch.stack(moments).mean(0).double()


def factor_kernel(weight: torch.Tensor, covariance: torch.Tensor, rank: int,
                  ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factorisation ``weight ~ kernel @ reduce`` in the input statistics' norm.

    weight (cout, cin, k, k) -> (kernel (cout, rank, k, k), reduce (rank, cin)) minimising
    E || (W - K R) x ||^2 for inputs x with second moment ``covariance``: with C = L L^T that is the rank-r
    truncation of W L, mapped back through L^-1.
    """
    cout, cin, kh, kw = weight.shape
    m = weight.double().permute(0, 2, 3, 1).reshape(cout * kh * kw, cin)
    c = covariance + ridge * covariance.diagonal().mean() * torch.eye(cin, dtype=torch.float64)
    lower = torch.linalg.cholesky(c)
    u, s, vh = torch.linalg.svd(m @ lower, full_matrices=False)
    kernel = (u[:, :rank] * s[:rank]).view(cout, kh, kw, rank).permute(0, 3, 1, 2)
    reduce = torch.linalg.solve_triangular(lower.T, vh[:rank].T, upper=True).T  # V_r^T L^-1
    return kernel.float().contiguous(), reduce.float().contiguous()


@torch.no_grad()
def convert_generator(source: StyleFaceGenerator, config: GeneratorConfig, w: torch.Tensor,
                      view: torch.Tensor) -> StyleFaceGenerator:
    """A generator of architecture ``config`` initialised from ``source``; ``w``, ``view``: calibration inputs."""
    target = StyleFaceGenerator(config).eval()
    src = source.state_dict()
    own = target.state_dict()
    copied = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    target.load_state_dict(copied, strict=False)
    for i, block in enumerate(target.blocks):
        conv = block.conv1
        if conv.reduce is None:
            continue
        source_conv = source.blocks[i].conv1
        cov = input_covariance(source, source_conv, w, view)
        kernel, reduce = factor_kernel(source_conv.effective_weight(), cov, conv.reduce.shape[0])
        conv.weight.copy_(kernel)
        conv.reduce.copy_(reduce)
    return target


def convert_checkpoint(source_dir: Path, out_dir: Path, changes: dict, calibration: int = 256,
                       seed: int = 12345) -> dict:
    """Write a resumable training run in ``out_dir`` whose generator is the source run's EMA generator
    converted to ``changes`` (GeneratorConfig fields); its state keeps the source's step and history."""
    from .factor_training import training_batch  # the calibration faces are training-range faces

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    state = json.loads((source_dir / "state.json").read_text())
    source = StyleFaceGenerator(GeneratorConfig.from_dict(state["config"]["generator"]))
    source.load_state_dict(load_file(source_dir / "ema.safetensors"))
    source.eval()
    config = GeneratorConfig.from_dict({**asdict(source.config), **changes})
    factors, views, _ = training_batch(0, calibration, seed=seed)
    with torch.no_grad():
        w = source.map_identity(factors)
    target = convert_generator(source, config, w, views)
    with torch.no_grad():
        a, b = source.render(w[:64], views[:64]), target.render(w[:64], views[:64])
        agreement = float(10 * torch.log10(1 / (a - b).square().mean()))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous() for k, v in target.state_dict().items()}
    save_file(weights, out_dir / "ema.safetensors")
    save_file(weights, out_dir / "model.safetensors")
    conversion = {"from": str(source_dir), "step": state["step"], "changes": changes,
                  "psnr_vs_source_db": round(agreement, 2)}
    state["config"]["generator"] = asdict(config)
    state["conversions"] = [*state.get("conversions", []), conversion]
    (out_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if (source_dir / "train.log").exists():
        shutil.copy(source_dir / "train.log", out_dir / "train.log")
    return conversion
