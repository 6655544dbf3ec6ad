"""The full-size check (scripts/fullsize_check.py): its configurations are Stable Diffusion 1.5's at real size
(parameter counts on the meta device, no memory), its code path runs end to end on shrunken configurations, and the
real run — slow, minutes and ~10 GB of RAM on a CPU — loads, trains two steps and renders at 512 px."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fullsize_check.py"


@pytest.fixture(scope="module")
def check():
    for mod in ("diffusers", "transformers", "onnx", "onnxruntime", "insightface"):
        pytest.importorskip(mod)
    spec = importlib.util.spec_from_file_location("fullsize_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configurations_are_stable_diffusion_1_5_at_real_size(check):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**check.UNET_CONFIG)
        te = CLIPTextModel(CLIPTextConfig(**check.TEXT_CONFIG))
        vae = AutoencoderKL(**check.VAE_CONFIG)
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD1.5's UNet
    assert sum(p.numel() for p in te.parameters()) == 123_060_480  # CLIP ViT-L/14 text tower
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # SD's VAE
    assert len([n for n, _ in unet.named_modules() if n.endswith(".attn2")]) == 16


def test_the_check_runs_end_to_end_on_shrunken_configurations(check, tmp_path, monkeypatch):
    monkeypatch.setattr(check, "UNET_CONFIG", {**check.UNET_CONFIG, "sample_size": 8,
                                               "block_out_channels": (32, 32, 32, 32), "attention_head_dim": 4,
                                               "norm_num_groups": 8, "cross_attention_dim": 544})
    monkeypatch.setattr(check, "TEXT_CONFIG", {**check.TEXT_CONFIG, "hidden_size": 544, "intermediate_size": 64,
                                               "num_hidden_layers": 1, "num_attention_heads": 4,
                                               "projection_dim": 544})
    monkeypatch.setattr(check, "VAE_CONFIG", {**check.VAE_CONFIG, "block_out_channels": (8, 8, 8, 8),
                                              "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 64})
    built = check.build_models(tmp_path)
    out = check.run_check(tmp_path, "cpu", "fp32", steps=2, render_steps=2)
    assert out["unet_parameters"] == built["unet"] and out["adapter_sites"] == 16
    assert len(out["step_seconds"]) == 2 and len(out["losses"]) == 2
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in out["losses"])
    assert out["render_shape"] == [1, 3, 64, 64] and out["render_finite"]
    assert 0 < out["adapter_fraction"] and out["peak_rss_gb"] >= out["rss_after_load_gb"] > 0


def test_doc_section_labels_only_measured_devices(check, tmp_path, monkeypatch):
    cpu = {"device": "cpu", "dtype": "fp32", "unet_parameters": 1, "text_encoder_parameters": 2, "vae_parameters": 3,
           "adapter_parameters": 1, "adapter_fraction": 0.01, "adapter_sites": 16, "load_seconds": 1,
           "step_seconds": [3, 2], "render_t": 0.8, "size_px": [512, 512], "render_steps": 2, "render_seconds": 5,
           "render_finite": True, "peak_rss_gb": 9, "rss_after_load_gb": 5, "rss_after_training_gb": 8}
    text = check._fmt_section([cpu])
    assert "**cpu, fp32 — measured**" in text and "**cuda, bf16 — not measured**" in text
    gpu = {**cpu, "device": "cuda", "dtype": "bf16", "peak_gpu_memory_gb": 12}
    text = check._fmt_section([cpu, gpu])
    assert "cuda, bf16 — measured" in text and "not measured" not in text and "12 GB" in text


@pytest.mark.slow
def test_full_size_run_on_cpu(check, tmp_path):
    """The real thing (what docs/backends.md reports): ~11 GB RAM and ~40 minutes on 2 shared cores."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--no-save", "--work-dir", str(tmp_path)],
                          check=True, capture_output=True, text=True)
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert out["unet_parameters"] == 859_520_964 and out["render_shape"] == [1, 3, 512, 512]
    assert out["render_finite"] and len(out["step_seconds"]) == 2
