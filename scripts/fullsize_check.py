"""Full-size check: the Arc2Face backend at real dimensions (random weights), through the code a user runs.

    OMP_NUM_THREADS=2 python scripts/fullsize_check.py --device cpu --dtype fp32      # ~40 min, 11 GB on 2 cores
    python scripts/fullsize_check.py --device cuda --dtype bf16 [--steps 150]         # on a GPU
    python scripts/fullsize_check.py --write-doc       # (re)write "Full-size check" in docs/backends.md from the JSONs

A child process builds Arc2Face-shaped models with random weights — ``UNet2DConditionModel`` with Stable Diffusion
1.5's configuration, a CLIP ViT-L/14 text encoder (``CLIPTextModel``), SD's ``AutoencoderKL`` and SD1.5's scheduler
— and saves them with ``save_pretrained`` in Arc2Face's layout (``models/arc2face``, ``models/encoder``;
``sd15/vae``, ``sd15/tokenizer``, ``sd15/scheduler``). The tokenizer is a small BPE vocabulary that spells the Arc2Face
prompt (the real one is not available offline; token ids only index the 49,408-row embedding). This process then
loads them with ``load_backend("arc2face", ...)`` as a user would, trains ODE adapters on every ``attn2`` site for
``--steps`` epsilon-matching steps through the engine's ``train_adapter``, and renders one image at t = t_end / 2 at
512 px. Figures go to ``docs/fullsize_check_<device>_<dtype>.json``; ``--write-doc`` turns every JSON present into
the section of docs/backends.md (a device without a JSON is reported as not measured).

To fit a 2-core, 24 GB CPU machine the run is small in what repeats, not in the model: gradient checkpointing, 2
trajectory steps, 1 seed, 1 local + 1 adjacency + 1 preservation row per step (plus the empty prompt), 2 sampling
steps for the render. The insightface pack is a tiny random one (uploads are not exercised here).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS = ROOT / "docs"
HEADING = "## Full-size check"
COMMAND = "OMP_NUM_THREADS=2 python scripts/fullsize_check.py --device cpu --dtype fp32"

# Stable Diffusion 1.5's UNet (CompVis/stable-diffusion-v1-4 / runwayml configs): diffusers' defaults except these
UNET_CONFIG = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
               "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
               "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                    "DownBlock2D"),
               "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")}
# CLIP ViT-L/14's text tower (SD1.5's text_encoder; Arc2Face's encoder is a fine-tuned copy)
TEXT_CONFIG = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
               "projection_dim": 768}
VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
              "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
              "up_block_types": ("UpDecoderBlock2D",) * 4}
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                    "steps_offset": 1}


def build_models(root: Path, device: str = "cpu") -> dict:
    """Random-weight Arc2Face-shaped models saved in Arc2Face's layout under ``root``; returns parameter counts."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from legato_core.backends.testing import _tiny_tokenizer_files, build_tiny_insightface_pack

    torch.manual_seed(0)
    counts = {}
    tok_dir = root / "sd15" / "tokenizer"
    _tiny_tokenizer_files(tok_dir)
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>"}))
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    te = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    counts["text_encoder"] = sum(p.numel() for p in te.parameters())
    te.save_pretrained(root / "models" / "encoder")
    del te
    gc.collect()
    unet = UNet2DConditionModel(**UNET_CONFIG)
    counts["unet"] = sum(p.numel() for p in unet.parameters())
    unet.save_pretrained(root / "models" / "arc2face")
    del unet
    gc.collect()
    vae = AutoencoderKL(**VAE_CONFIG)
    counts["vae"] = sum(p.numel() for p in vae.parameters())
    vae.save_pretrained(root / "sd15" / "vae")
    del vae
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(root / "sd15" / "scheduler")
    build_tiny_insightface_pack(root / "pack")
    return counts


def _rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def run_check(root: Path, device: str, dtype: str, steps: int, render_steps: int) -> dict:
    """Load through the registry, train ``steps`` epsilon-matching steps, render one image at t_end / 2."""
    from legato_core.adapters import active
    from legato_core.backends.registry import load_backend
    from legato_core.backends.testing import stand_in_recognition
    from legato_core.unlearning.engine import ForgetConfig, train_adapter

    out: dict = {"device": device, "dtype": dtype, "threads": torch.get_num_threads(), "steps": steps,
                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    backend = load_backend("arc2face", model_path=str(root / "models"), base_model_path=str(root / "sd15"),
                           insightface_pack=str(root / "pack"), device=device, dtype=dtype,
                           gradient_checkpointing=True, num_inference_steps=render_steps, cache_steps=2,
                           cache_seeds=1, retain_seeds=1, render_batch=1, scheduler="dpm",
                           **stand_in_recognition(root / "pack"))  # the tiny pack's recogniser stands in
    out["load_seconds"] = round(time.perf_counter() - t0, 1)
    out["rss_after_load_gb"] = round(_rss_gb(), 2)
    out["unet_parameters"] = backend.parameter_count()
    out["text_encoder_parameters"] = sum(p.numel() for p in backend.text_encoder.parameters())
    out["vae_parameters"] = sum(p.numel() for p in backend.vae.parameters())
    out["adapter_sites"] = len(backend.adapter_sites)
    out["size_px"] = [backend.height, backend.width]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cfg = ForgetConfig(steps=steps, local_views=1, adjacency_samples=1, preservation_samples=1)
    w = backend.sample_latents(1, torch.Generator().manual_seed(0))
    stamps = [time.perf_counter()]
    losses = []

    def on_progress(ev):
        stamps.append(time.perf_counter())
        losses.append({k: round(float(v), 6) for k, v in ev.losses.items()})

    res = train_adapter(backend, w, cfg, on_progress=on_progress)
    step_s = [round(b - a, 1) for a, b in itertools.pairwise(stamps)]
    out["step_seconds"] = step_s  # the first step also samples the frozen trajectories (the cache)
    out["train_seconds"] = round(stamps[-1] - stamps[0], 1)
    out["losses"] = losses
    out["adapter_parameters"] = res.adapter.trainable_parameters()
    out["adapter_fraction"] = out["adapter_parameters"] / out["unet_parameters"]
    out["rss_after_training_gb"] = round(_rss_gb(), 2)
    t_mid = cfg.ode.t_end / 2
    with active(backend, [(res.adapter, t_mid)]):
        t1 = time.perf_counter()
        img = backend.render(w, backend.canonical_views(1))
        out["render_seconds"] = round(time.perf_counter() - t1, 1)
    out["render_t"] = t_mid
    out["render_shape"] = list(img.shape)
    out["render_finite"] = bool(torch.isfinite(img).all())
    out["render_steps"] = render_steps
    out["peak_rss_gb"] = round(_rss_gb(), 2)
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # other processes share the CPUs
    if device.startswith("cuda"):
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return out


def _fmt_section(results: list[dict]) -> str:
    lines = [HEADING, "",
             "Arc2Face-shaped models at real dimensions with **random weights** (SD1.5 UNet, CLIP ViT-L/14 text "
             "encoder, SD VAE), saved with `save_pretrained` and loaded through `load_backend(\"arc2face\", ...)`; ODE "
             "adapters on all 16 `attn2` sites; ε-matching steps through `train_adapter` (gradient checkpointing, "
             "2 trajectory steps, 1 seed, 1 local + 1 adjacency + 1 preservation row + the empty prompt per step); "
             "one render at t = t_end / 2 at 512 px. Produced by `scripts/fullsize_check.py` (figures from "
             "`docs/fullsize_check_<device>_<dtype>.json`). Random weights: this checks memory, time and that the "
             "code runs at these sizes, not image quality.", ""]
    measured = {(r["device"].split(":")[0], r["dtype"]): r for r in results}
    for r in results:
        rows = [
            ("command", f"`{r.get('command', COMMAND)}`"),
            ("machine", r.get("machine", "") + (f"; load average (1/5/15 min) {r['load_average_at_start']} at start, "
                                                 f"{r['load_average_at_end']} at the end: other jobs shared the "
                                                 "cores, so times are upper bounds" if "load_average_at_end" in r
                                                 else "")),
            ("parameters: UNet / text encoder / VAE",
             f"{r['unet_parameters']:,} / {r['text_encoder_parameters']:,} / {r['vae_parameters']:,}"),
            ("adapter parameters (fraction of the UNet)",
             f"{r['adapter_parameters']:,} ({100 * r['adapter_fraction']:.2f} %) on {r['adapter_sites']} sites "
             "(ForgetConfig's ODE hidden width 64)"),
            ("models built and saved (child process)", f"{r['saved_gb']} GB of safetensors in {r['build_seconds']} s"
             if "saved_gb" in r else "—"),
            ("load (from disk, through the registry)", f"{r['load_seconds']} s"),
            ("seconds per training step", " / ".join(f"{s} s" for s in r["step_seconds"]) +
             " (the first includes sampling the frozen trajectories)"),
            (f"render at t = {r['render_t']:.2f}, {r['size_px'][0]} px, {r['render_steps']} DPM steps + VAE decode",
             f"{r['render_seconds']} s, finite: {r['render_finite']}"),
            ("peak RSS (this process: load, training, render)", f"{r['peak_rss_gb']} GB"
             f" (after load {r['rss_after_load_gb']} GB: the weights appear to be memory-mapped from the safetensors "
             "and paged in at first use; "
             f"after training {r['rss_after_training_gb']} GB)"),
        ]
        if "peak_gpu_memory_gb" in r:
            rows.append(("peak GPU memory (training + render)", f"{r['peak_gpu_memory_gb']} GB"))
        lines += [f"**{r['device']}, {r['dtype']} — measured** ({r.get('date', '')}):", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows] + [""]
    if ("cuda", "bf16") not in measured:
        lines += ["**cuda, bf16 — not measured** (no GPU in the session that ran this). Run "
                  "`python scripts/fullsize_check.py --device cuda --dtype bf16 --steps 150` then `--write-doc` "
                  "for time per step, a whole forget run's time and peak GPU memory.", ""]
    return "\n".join(lines)


def write_doc() -> Path:
    """Replace (or insert before "Cost on diffusion backends") the "Full-size check" section of docs/backends.md."""
    results = [json.loads(p.read_text()) for p in sorted(DOCS.glob("fullsize_check_*.json"))]
    section = _fmt_section(results).rstrip("\n") + "\n\n"
    doc = DOCS / "backends.md"
    text = doc.read_text()
    if HEADING in text:
        start = text.index(HEADING)
        nxt = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        anchor = text.find("## Cost on diffusion backends")
        text = text[:anchor] + section + "\n" + text[anchor:] if anchor >= 0 else text + "\n" + section
    doc.write_text(text)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=2, help="epsilon-matching training steps")
    ap.add_argument("--render-steps", type=int, default=2, help="sampling steps of the render")
    ap.add_argument("--work-dir", help="where the random models are saved (default: a temporary folder)")
    ap.add_argument("--build-only", metavar="DIR", help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--write-doc", action="store_true", help="only rewrite the docs/backends.md section")
    ap.add_argument("--no-save", action="store_true", help="print the JSON without writing docs/")
    args = ap.parse_args(argv)
    if args.build_only:
        print(json.dumps(build_models(Path(args.build_only))))
        return 0
    if args.write_doc:
        print(f"wrote {write_doc()}")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--build-only", str(root)], check=True,
                               capture_output=True, text=True)
        built = json.loads(child.stdout.strip().splitlines()[-1])
        build_s = round(time.perf_counter() - t0, 1)
        size_gb = round(sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2 ** 30, 2)
        result = run_check(root, args.device, args.dtype, args.steps, args.render_steps)
    result.update({"built_parameters": built, "build_seconds": build_s, "saved_gb": size_gb,
                   "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs visible, "
                   f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
                   "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
                              f"scripts/fullsize_check.py --device {args.device} --dtype {args.dtype} --steps "
                              f"{args.steps}"})
    print(json.dumps(result, indent=2))
    if not args.no_save:
        (DOCS / f"fullsize_check_{args.device.split(':')[0]}_{args.dtype}.json").write_text(
            json.dumps(result, indent=2) + "\n")
        write_doc()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
