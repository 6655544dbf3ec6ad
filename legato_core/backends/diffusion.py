"""diffusers backends: Arc2Face-style identity-conditioned Stable Diffusion, and unconditional DDPM/DDIM faces.

Both sit behind the engine's backend contract (``base.py``) and name their own per-step objective
(``unlearning/step_objectives.py``: a diffusion model cannot be rendered with gradients through every sampling step
at useful cost); the backends provide its primitives (``predict_noise``, ``alpha_bar``, ``frozen_trajectories``,
``trajectory_pool``, ``encode_condition``, ``identity_term``) and import nothing from ``unlearning/``.

**Arc2Face** (:class:`Arc2FaceBackend`). The latent is the unit 512-d ArcFace embedding of the photo (insightface),
written into the "id" token of "photo of a id person" and encoded by the (fine-tuned) CLIP text encoder; a view is
the seed of the initial noise. Unlearning is epsilon-matching: on noisy states x_t, the adapted UNet conditioned on
the target embedding must predict what the frozen UNet predicts for the anchor embedding (GUIDE's local and
adjacency terms); conditioned on random embeddings (and on the empty prompt, which classifier-free guidance also
evaluates) it must predict what the frozen UNet predicts (preservation). The states x_t come from frozen DDIM
trajectories generated once per run for the target, the anchor and random identities, so training sees the states
that sampling visits; the timestep is the state's own.

**DDPM** (:class:`DDPMBackend`, e.g. google/ddpm-celebahq-256). The latent is the DDIM-inverted x_T of the photo
(flattened); rendering is deterministic DDIM from x_T, so there is no view (views are zeros). With no conditioning
to swap, the objective acts along the sampling trajectory itself: for a state x on the frozen target trajectory,
moved part of the way towards the anchor trajectory (x = x_k^u + lambda sqrt(abar_k) (x0^t_k - x0^u_k),
lambda ~ U(0, 1), which covers the states the adapted sampler passes through), the adapted UNet must predict the
noise whose x0-estimate is the anchor trajectory's x0-estimate at the same step,
eps* = (x - sqrt(abar_k) x0^t_k) / sqrt(1 - abar_k). Matching the anchor's *x0* rather than its raw epsilon matters:
copying the anchor's epsilon at a different state amplifies the state gap by sqrt(abar_0 / abar_T) (~150x for the
linear schedule) by the end of sampling. The epsilon error is weighted by min(1, (1 - abar) / abar) (min-SNR,
gamma = 1), i.e. an x0 error capped at the epsilon error, so low-noise steps do not dominate. Preservation: on
frozen trajectories from random x_T, adapted epsilon = frozen epsilon.

Both: ODE adapters hook UNet modules (``sites``: "attn2" = every cross-attention output, token-wise vector field;
"blocks" = mid block and up blocks, conv vector field; or explicit module paths). t is the forgetting intensity and
t = 0 is the base model exactly. On CUDA Arc2Face runs in fp16 (as its official code does) and DDPM in bf16 (fp16
where bf16 is unsupported); the adapters run in the model's dtype under autocast while their parameters (and
Adam's state) stay float32. Dedicated GPU only: nothing is wrapped for ZeroGPU. insightface detection stays on the
CPU.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
from contextlib import nullcontext
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .insightface_identity import (
    InsightFaceIdentity,
    TorchArcFace,
    check_arc2face_recognition,
    load_torch_arcface,
)

log = logging.getLogger(__name__)

ARC2FACE_PROMPT = "photo of a id person"


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(f"the diffusers backends need `pip install -r requirements-backends.txt` ({module}): {e}") \
            from e


def pick_device_dtype(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                      cuda_dtype: torch.dtype | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA when available with ``cuda_dtype`` (default bf16, fp16 where bf16 is unsupported), else CPU float32."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(names)}")
        dtype = names[dtype]
    if dtype is None:
        if dev.type == "cuda":
            dtype = cuda_dtype or (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        else:
            dtype = torch.float32
    return dev, dtype


def _place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move to the device; cast only if ``from_pretrained(torch_dtype=...)`` did not already (diffusers warns)."""
    p = next(module.parameters(), None)
    if p is not None and p.dtype != dtype:
        module.to(dtype=dtype)
    return module.to(device).eval()


def _first_dir(what: str, candidates: list[Path], files: tuple[str, ...] = ("config.json",)) -> Path:
    for c in candidates:
        if c.is_dir() and (not files or any((c / f).is_file() for f in files)):
            return c
    raise FileNotFoundError(f"{what} not found; looked in {[str(c) for c in candidates]} for {list(files)}")


class DiffusionBackend(nn.Module):
    """What both diffusers backends share: device/dtype, adapter sites, hashing, adapter placement, losses glue."""

    base_model_id = "diffusers"
    renders_fast = False  # a render is a full sampling loop: no per-run target search
    face_world = False  # photos only: no face-world examples or ids
    # unlearning_report sizes: every sample is a full sampling run (seconds each on a GPU)
    report_defaults: ClassVar[dict] = {"n_views": 4, "curve_points": 5, "pixel_others": 4}
    eval_samples = 32

    def report_sizes(self, eval_samples: int | None = None) -> dict:
        n = eval_samples if eval_samples is not None else self.eval_samples
        return {**self.report_defaults, "n_retain": n, "n_fd": n}

    def label(self, model_path: str | Path | None = None) -> str:
        """The line the app shows, e.g. "arc2face from /models/Arc2Face/models (cuda, bf16)"."""
        info = self.describe()
        where = f" from {model_path}" if model_path else f" ({info['base_model_id']})"
        dtype = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}.get(info["dtype"],
                                                                                                info["dtype"])
        return f"{self.name}{where} ({info['device']}, {dtype})"

    def __init__(self, unet: nn.Module, *, device: torch.device, dtype: torch.dtype, sites: str | list[str],
                 gradient_checkpointing: bool, identity: InsightFaceIdentity | None,
                 arcface_torch: TorchArcFace | None, identity_weight: float, cache_steps: int, cache_seeds: int,
                 retain_seeds: int, render_batch: int, base_model_id: str):
        super().__init__()
        self.device_, self.dtype = device, dtype
        self.unet = _place(unet, device, dtype)
        self.unet.requires_grad_(False)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.gradient_checkpointing = gradient_checkpointing
        self.identity = identity
        self.arcface_torch = arcface_torch.to(device) if arcface_torch is not None else None
        self.identity_weight = identity_weight if arcface_torch is not None else 0.0
        self.cache_steps, self.cache_seeds, self.retain_seeds = cache_steps, cache_seeds, retain_seeds
        self.render_batch = render_batch
        self.base_model_id = base_model_id
        self._sites = self._find_sites(sites)
        self._hash: str | None = None
        if arcface_torch is None:
            log.info("%s", self.identity_loss_note)

    # -- contract ------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.device_

    @property
    def adapter_sites(self) -> dict[str, nn.Module]:
        return self._sites

    @property
    def forget_sites(self) -> list[str]:
        return list(self._sites)  # the ``sites`` the backend was built with are the choice

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.unet.parameters())

    def _hashed_modules(self) -> list[nn.Module]:
        return [self.unet]

    def weight_hash(self) -> str:
        """A fingerprint of the frozen weights (names, shapes, 64 strided values per tensor rounded to bf16).

        Rounding to bf16 lets an adapter trained on a bf16 copy load onto a float32 copy of the same checkpoint.
        """
        if self._hash is None:
            h = hashlib.sha256()
            for module in self._hashed_modules():
                for name, t in sorted(module.state_dict().items()):
                    flat = t.detach().reshape(-1)
                    sample = flat[:: max(1, flat.numel() // 64)][:64].to(torch.bfloat16).float().cpu()
                    h.update(f"{name}{tuple(t.shape)}".encode())
                    h.update(sample.numpy().tobytes())
            self._hash = h.hexdigest()[:16]
        return self._hash

    def prepare_adapter(self, adapter: nn.Module) -> None:
        """Adapters live on the model's device; their parameters stay float32, compute follows the model's dtype."""
        p = next(adapter.parameters(), None)
        if p is not None and p.device != self.device:
            adapter.to(self.device)

    def identity_networks(self) -> list[nn.Module]:
        """Every identity network this backend trains with or is conditioned on (no judge may be one of them)."""
        return [n for n in (self.arcface_torch, self.identity) if n is not None]

    def loss_identity_model(self):
        """The differentiable torch ArcFace when given, else the insightface judge (ONNX, no gradients)."""
        if self.arcface_torch is not None:
            return self.arcface_torch
        if self.identity is not None:
            return self.identity
        raise RuntimeError("this backend has no identity network: pass insightface_pack= (and arcface_torch= for a "
                           "differentiable training identity loss)")

    @property
    def identity_loss_note(self) -> str:
        if self.arcface_torch is not None:
            return (f"training: epsilon-matching + identity loss (weight {self.identity_weight}) with "
                    f"{self.arcface_torch.describe()}")
        judge = self.identity.describe() if self.identity is not None else "no insightface pack"
        return ("training: epsilon-matching only (no differentiable ArcFace given, so no identity loss); "
                f"identity network: {judge}")

    def describe(self) -> dict:
        kinds = {}
        for m in self._sites.values():
            kinds[m.adapter_kind] = kinds.get(m.adapter_kind, 0) + 1
        return {"base_model_id": self.base_model_id, "device": str(self.device), "dtype": str(self.dtype),
                "sites": len(self._sites), "site_kinds": kinds, "gradient_checkpointing": self.gradient_checkpointing,
                "unet_parameters": self.parameter_count(), "identity": self.identity_loss_note}

    # -- sites ---------------------------------------------------------------------------------------------------
    def _find_sites(self, spec: str | list[str]) -> dict[str, nn.Module]:
        unet = self.unet
        if isinstance(spec, str):
            if spec == "attn2":
                paths = [n for n, _ in unet.named_modules() if n.endswith(".attn2")]
            elif spec == "blocks":
                paths = ["mid_block"] + [f"up_blocks.{i}" for i in range(len(unet.up_blocks))]
            elif spec == "mid":
                paths = ["mid_block"]
            else:
                raise ValueError(f"unknown site set {spec!r}; use 'attn2', 'blocks', 'mid' or a list of module paths")
        else:
            paths = list(spec)
        if not paths:
            raise ValueError(f"the UNet has no adapter sites for {spec!r} (no cross-attention in an unconditional "
                             "UNet: use sites='blocks')")
        sites = {}
        for path in paths:
            module = unet.get_submodule(path)
            kind, channels = self._kind_and_channels(path, module)
            if getattr(module, "channels", channels) != channels or getattr(module, "adapter_kind", kind) != kind:
                raise ValueError(f"module {path} already has a different `channels`/`adapter_kind` attribute")
            module.channels, module.adapter_kind = channels, kind
            sites[path.replace(".", ":")] = module
        return sites

    @staticmethod
    def _kind_and_channels(path: str, module: nn.Module) -> tuple[str, int]:
        if path.split(".")[0] == "down_blocks" and path.count(".") == 1:
            raise ValueError(f"{path} returns (hidden, residuals), not a tensor; use mid_block, up_blocks.* or "
                             "attention modules")
        if hasattr(module, "to_out"):  # a diffusers Attention
            channels = module.to_out[0].out_features
            # inside transformer blocks attention sees (B, tokens, C); UNet2DModel's attention returns (B, C, H, W)
            return ("token" if "transformer_blocks" in path else "conv"), channels
        if hasattr(module, "resnets"):
            return "conv", module.resnets[-1].out_channels
        raise ValueError(f"don't know the output of {path} ({type(module).__name__}); use blocks or attention")

    # -- shared machinery ----------------------------------------------------------------------------------------
    def _amp(self):
        """Compute in the model's dtype (adapters included) while float32 parameters stay float32."""
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor,
                      cond: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's noise prediction in float32 (computed in the model's dtype); adapters per ``active``."""
        with self._amp():
            kw = {} if cond is None else {"encoder_hidden_states": cond.to(self.dtype)}
            return self.unet(x.to(self.dtype), timestep, **kw).sample.float()

    def alpha_bar(self, timestep: torch.Tensor) -> torch.Tensor:
        """The noise schedule's cumulative alpha at each timestep."""
        return self._train_scheduler.alphas_cumprod.to(self.device)[timestep.long().to(self.device)].float()

    @staticmethod
    def _views_to_seeds(view: torch.Tensor) -> list[int]:
        return [int(v) for v in view.reshape(len(view), -1)[:, 0].round().tolist()]

    def _noise(self, seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
        """Initial noise per seed as diffusers' pipelines draw it for ``generator=torch.Generator(device)``: on the
        model's device, in its dtype. Why: a seed then gives the official Arc2Face demo's image (its generator is on
        the GPU); the price is that a seed's image differs between CPU and GPU."""
        from diffusers.utils.torch_utils import randn_tensor

        return torch.cat([randn_tensor((1, *shape), generator=torch.Generator(self.device).manual_seed(s),
                                       device=self.device, dtype=self.dtype) for s in seeds]).float()

    def identity_term(self, x0_adapted: torch.Tensor, x0_reference: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """1 - cos between torch-ArcFace embeddings of adapted and reference x0 estimates, weighted by abar."""
        img = self._to_images(x0_adapted)
        with torch.no_grad():
            ref = self._to_images(x0_reference)
            kps = self.identity.landmarks(ref) if self.identity is not None else None
            e_ref = self.arcface_torch(ref, kps)
        e = self.arcface_torch(img, kps)
        return (abar * (1 - (e * e_ref).sum(1))).sum() / abar.sum().clamp(min=1e-8)

    def _to_images(self, x0: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _chunks(self, n: int):
        for i in range(0, n, self.render_batch):
            yield slice(i, min(n, i + self.render_batch))


# ====================================================================================================================
class Arc2FaceBackend(DiffusionBackend):
    """Arc2Face-style ID-conditioned Stable Diffusion: embedding -> "id" token -> CLIP text encoder -> UNet."""

    name = "arc2face"
    objective = "epsilon-matching"
    has_views = True  # a view is the seed of the initial noise
    reads_whole_photo = False  # uploads are detected (by the pack's SCRFD) and aligned to face_crop() once
    cuda_dtype = torch.float16  # the official Arc2Face code's

    @property
    def image_size(self) -> int:
        return int(self.height)

    @classmethod
    def from_options(cls, model_path: str | Path | None = None, **opts) -> Arc2FaceBackend:
        if model_path is None:
            raise ValueError("the arc2face backend needs model_path (--model-path PATH, a local folder)")
        if opts.get("insightface_pack") is None:
            raise ValueError("the arc2face backend needs insightface_pack (--insightface-pack PATH): uploads are "
                             "embedded with insightface (antelopev2 + Arc2Face's arcface.onnx)")
        return cls.from_pretrained(Path(model_path).expanduser(), **opts)

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, tokenizer, vae: nn.Module, scheduler,
                 identity: InsightFaceIdentity | None = None, *, arcface_torch: TorchArcFace | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 sites: str | list[str] = "attn2", gradient_checkpointing: bool = False, guidance_scale: float = 3.0,
                 num_inference_steps: int = 25, cache_steps: int = 25, cache_seeds: int = 2, retain_seeds: int = 4,
                 identity_weight: float = 0.1, render_batch: int = 8, prompt: str = ARC2FACE_PROMPT,
                 height: int | None = None, width: int | None = None, base_model_id: str = "diffusers/arc2face",
                 expected_recognition_sha256: str | None = None):
        dev, dt = pick_device_dtype(device, dtype, self.cuda_dtype)
        if identity is not None:  # before any weight moves: a wrong pack fails fast
            self.recognition_sha256 = check_arc2face_recognition(identity, expected_recognition_sha256)
        super().__init__(unet, device=dev, dtype=dt, sites=sites, gradient_checkpointing=gradient_checkpointing,
                         identity=identity, arcface_torch=arcface_torch, identity_weight=identity_weight,
                         cache_steps=cache_steps, cache_seeds=cache_seeds, retain_seeds=retain_seeds,
                         render_batch=render_batch, base_model_id=base_model_id)
        diffusers = _require("diffusers")
        if hasattr(text_encoder, "text_model"):
            raise RuntimeError("this CLIPTextModel has the transformers 4.x layout; the Arc2Face backend targets "
                               "transformers 5 (pinned in requirements-backends.txt)")
        self.text_encoder = _place(text_encoder, dev, dt).requires_grad_(False)
        self.vae = _place(vae, dev, dt).requires_grad_(False)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self._train_scheduler = diffusers.DDIMScheduler.from_config(scheduler.config, clip_sample=False,
                                                                    set_alpha_to_one=True)
        self.guidance_scale, self.num_inference_steps = guidance_scale, num_inference_steps
        self.hidden_size = text_encoder.config.hidden_size
        self.id_dim = 512
        max_len = tokenizer.model_max_length
        self._prompt_ids = tokenizer(prompt, truncation=True, padding="max_length", max_length=max_len,
                                     return_tensors="pt").input_ids
        self._empty_ids = tokenizer("", truncation=True, padding="max_length", max_length=max_len,
                                    return_tensors="pt").input_ids
        id_tok = tokenizer.encode("id", add_special_tokens=False)
        if len(id_tok) != 1 or int((self._prompt_ids == id_tok[0]).sum()) != 1:
            raise ValueError(f"the tokenizer must encode 'id' as one token that occurs once in {prompt!r}")
        self._id_token = id_tok[0]
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        size = unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        self.height, self.width = height or size * self.vae_scale, width or size * self.vae_scale
        self.register_buffer("_w_avg", torch.zeros(self.id_dim), persistent=False)
        self._neg: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, model_path: str | Path, base_model_path: str | Path | None = None,
                        insightface_pack: str | Path | InsightFaceIdentity | None = None,
                        arcface_torch: str | Path | TorchArcFace | nn.Module | None = None,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        scheduler: str = "dpm", **kwargs) -> Arc2FaceBackend:
        """Load from local folders only (``local_files_only``; nothing is downloaded).

        ``model_path``: Arc2Face's ``models`` folder (``arc2face/`` UNet, ``encoder/`` text encoder) or a diffusers
        pipeline folder (``unet/``, ``text_encoder/``). ``vae/``, ``tokenizer/`` and ``scheduler/`` are taken from
        ``model_path`` when present, else from ``base_model_path`` (a local Stable Diffusion 1.5 folder).
        """
        diffusers = _require("diffusers")
        transformers = _require("transformers")
        root = Path(model_path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"Arc2Face model folder not found: {root}")
        base = Path(base_model_path).expanduser() if base_model_path else None
        if base is not None and not base.is_dir():
            raise FileNotFoundError(f"base Stable Diffusion folder not found: {base}")
        roots = [root] + ([base] if base is not None else [])
        unet_dir = _first_dir("Arc2Face UNet", [root / "arc2face", root / "unet"])
        te_dir = _first_dir("Arc2Face text encoder", [root / "encoder", root / "text_encoder"])
        vae_dir = _first_dir("VAE (vae/ in model-path or base-model-path)", [r / "vae" for r in roots])
        tok_dir = _first_dir("tokenizer (tokenizer/ in model-path or base-model-path)",
                             [r / "tokenizer" for r in roots], ("tokenizer_config.json", "vocab.json"))
        sch_dir = _first_dir("scheduler (scheduler/ in model-path or base-model-path)",
                             [r / "scheduler" for r in roots], ("scheduler_config.json",))
        identity = insightface_pack
        if identity is not None and not isinstance(identity, InsightFaceIdentity):
            identity = InsightFaceIdentity(identity)
        if identity is not None:  # refuse a wrong pack before loading gigabytes
            check_arc2face_recognition(identity, kwargs.get("expected_recognition_sha256"))
        dev, dt = pick_device_dtype(device, dtype, cls.cuda_dtype)
        unet = diffusers.UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=dt, local_files_only=True)
        # plain CLIPTextModel, not Arc2Face's subclass: under transformers 5 the subclass silently drops weights
        text_encoder = transformers.CLIPTextModel.from_pretrained(te_dir, torch_dtype=dt, local_files_only=True)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
        vae = diffusers.AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dt, local_files_only=True)
        sched_cls = {"dpm": diffusers.DPMSolverMultistepScheduler, "ddim": diffusers.DDIMScheduler}[scheduler]
        sched = sched_cls.from_pretrained(sch_dir, local_files_only=True)
        if arcface_torch is not None and not isinstance(arcface_torch, TorchArcFace):
            arcface_torch = TorchArcFace(arcface_torch) if isinstance(arcface_torch, nn.Module) else \
                load_torch_arcface(arcface_torch)
        return cls(unet, text_encoder, tokenizer, vae, sched, identity, arcface_torch=arcface_torch, device=dev,
                   dtype=dt, base_model_id=f"diffusers/arc2face:{unet_dir.parent.name}", **kwargs)

    def _hashed_modules(self) -> list[nn.Module]:
        return [self.unet, self.text_encoder]

    # -- latent space ----------------------------------------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        """The zero embedding: "average" target = the id token carries no identity."""
        return self._w_avg.cpu()

    @property
    def latent_dim(self) -> int:
        return self.id_dim

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random identities: unit-normalised Gaussian 512-d vectors (our assumption for Arc2Face's ID space)."""
        return F.normalize(torch.randn(n, self.id_dim, generator=generator), dim=1)

    def sample_views(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, 2 ** 24, (n, 1), generator=generator).float()

    def canonical_views(self, n: int) -> torch.Tensor:
        return torch.arange(n, dtype=torch.float32)[:, None]

    # -- conditioning ----------------------------------------------------------------------------------------------
    def _encode_tokens(self, tok_embs: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        te = self.text_encoder
        h = te.embeddings(inputs_embeds=tok_embs)
        mask = create_causal_mask(config=te.config, inputs_embeds=h, attention_mask=None, past_key_values=None)
        out = te.encoder(inputs_embeds=h, attention_mask=mask, is_causal=True)
        return te.final_layer_norm(out.last_hidden_state)

    @torch.no_grad()
    def encode_condition(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, 512) identity embeddings -> (B, 77, hidden) prompt embeddings (rows are L2-normalised first)."""
        if emb.dim() != 2 or emb.shape[1] > self.hidden_size:
            raise ValueError(f"expected embeddings (B, <= {self.hidden_size}), got {tuple(emb.shape)}")
        emb = F.normalize(emb.float(), dim=1).to(self.device)
        ids = self._prompt_ids.to(self.device).expand(len(emb), -1)
        tok = self.text_encoder.embeddings.token_embedding(ids)
        padded = F.pad(emb, (0, self.hidden_size - emb.shape[1])).to(tok.dtype)
        tok = torch.where((ids == self._id_token)[..., None], padded[:, None, :], tok)
        return self._encode_tokens(tok)

    @torch.no_grad()
    def negative_condition(self) -> torch.Tensor:
        """The empty prompt through the same encoder (Arc2Face's negative prompt "")."""
        if self._neg is None:
            ids = self._empty_ids.to(self.device)
            self._neg = self._encode_tokens(self.text_encoder.embeddings.token_embedding(ids))
        return self._neg

    # -- images ----------------------------------------------------------------------------------------------------
    def _eps_cfg(self, x: torch.Tensor, t, cond: torch.Tensor, scheduler) -> torch.Tensor:
        xin = scheduler.scale_model_input(x, t)
        if self.guidance_scale <= 1:
            return self.predict_noise(xin, t, cond)
        neg = self.negative_condition().expand(len(x), -1, -1)
        eps_u, eps_c = self.predict_noise(torch.cat([xin, xin]), t, torch.cat([neg, cond])).chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def _latent_shape(self) -> tuple[int, int, int]:
        return (self.unet.config.in_channels, self.height // self.vae_scale, self.width // self.vae_scale)

    def _to_images(self, x0: torch.Tensor) -> torch.Tensor:
        with self._amp():
            img = self.vae.decode((x0 / self.vae.config.scaling_factor).to(self.dtype)).sample.float()
        return ((img + 1) / 2).clamp(0, 1)

    def _generate(self, latent: torch.Tensor, view: torch.Tensor, return_features: bool = False):
        images, feats = [], []
        seeds = self._views_to_seeds(view)
        for sl in self._chunks(len(latent)):
            cond = self.encode_condition(latent[sl])
            sched = type(self.scheduler).from_config(self.scheduler.config)
            sched.set_timesteps(self.num_inference_steps, device=self.device)
            x = self._noise(seeds[sl], self._latent_shape()) * sched.init_noise_sigma
            for t in sched.timesteps:
                x = sched.step(self._eps_cfg(x, t, cond, sched), t, x).prev_sample
            images.append(self._to_images(x).cpu())
            feats.append(x.cpu())
        img = torch.cat(images)
        return (img, torch.cat(feats)) if return_features else img

    def synthesize(self, latent: torch.Tensor, view: torch.Tensor, return_features: bool = False):
        """Full sampling with autograd enabled (contract; training uses the step objective instead)."""
        return self._generate(latent, view, return_features)

    @torch.no_grad()
    def render(self, latent: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Identity embeddings (B, 512) and seeds (B, 1) -> images (B, 3, H, W) in [0, 1]."""
        return self._generate(latent, view)

    def embed_upload(self, image, multiple: str = "largest"):
        """An uploaded photo -> FaceEmbedding (unit embedding, the face used and a message if several)."""
        if self.identity is None:
            raise RuntimeError("uploads need an insightface pack (insightface_pack=PATH / --insightface-pack PATH)")
        return self.identity.embed_photo(image, multiple=multiple)

    def face_crop(self):
        """ArcFace's 5-point template at the render size (Arc2Face's training framing), found by the pack's SCRFD
        on the original photo and always aligned: the crop shown is the one embedded."""
        from ..faces import FaceCrop

        detector = self.identity.face_detector() if self.identity is not None else None
        return FaceCrop.arcface(self.height, detector=detector, as_is=False)

    def invert(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops (B, 3, S, S) aligned to ``face_crop()`` (``faces.prepare_face``) or renders -> (embeddings,
        canonical seeds). No second detection: the crop's alignment is the upload's one detection."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        if self.identity is None:
            raise RuntimeError("uploads need an insightface pack (insightface_pack=PATH / --insightface-pack PATH)")
        emb = self.identity.embed_aligned(images)
        return emb, self.canonical_views(1).expand(len(images), -1).clone()

    # -- unlearning ------------------------------------------------------------------------------------------------
    @property
    def uses_guidance(self) -> bool:
        """Whether sampling also evaluates the empty prompt (classifier-free guidance), which must then be kept."""
        return self.guidance_scale > 1

    def frozen_trajectories(self, emb: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen DDIM trajectories (with guidance) -> states (S, B, C, h, w) and timesteps (S,)."""
        sched = type(self._train_scheduler).from_config(self._train_scheduler.config)
        sched.set_timesteps(self.cache_steps, device=self.device)
        cond = self.encode_condition(emb)
        x = self._noise(seeds, self._latent_shape()) * sched.init_noise_sigma
        states = []
        for t in sched.timesteps:
            states.append(x)
            x = sched.step(self._eps_cfg(x, t, cond, sched), t, x).prev_sample
        return torch.stack(states), sched.timesteps.clone()

# ====================================================================================================================
class DDPMBackend(DiffusionBackend):
    """Unconditional pixel-space DDPM (e.g. google/ddpm-celebahq-256) sampled with DDIM; latent = inverted x_T."""

    name = "ddpm"
    objective = "ddpm-trajectory"
    has_views = False  # DDIM from x_T is deterministic: one view
    reads_whole_photo = False  # uploads are detected and aligned to face_crop()
    report_defaults: ClassVar[dict] = {"n_views": 1, "curve_points": 5, "pixel_others": 4}

    @property
    def image_size(self) -> int:
        return int(self.size)

    @classmethod
    def from_options(cls, model_path: str | Path | None = None, base_model_path=None, **opts) -> DDPMBackend:
        if model_path is None:
            raise ValueError("the ddpm backend needs model_path (--model-path PATH, a local folder)")
        return cls.from_pretrained(Path(model_path).expanduser(), **opts)

    def __init__(self, unet: nn.Module, scheduler, identity: InsightFaceIdentity | None = None, *,
                 arcface_torch: TorchArcFace | None = None, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, sites: str | list[str] = "blocks",
                 gradient_checkpointing: bool = False, num_inference_steps: int = 50, retain_seeds: int = 4,
                 identity_weight: float = 0.1, render_batch: int = 16, base_model_id: str = "diffusers/ddpm"):
        dev, dt = pick_device_dtype(device, dtype)
        # one trajectory per x_T: DDIM from a given x_T is deterministic, so there are no extra seeds to cache
        super().__init__(unet, device=dev, dtype=dt, sites=sites, gradient_checkpointing=gradient_checkpointing,
                         identity=identity, arcface_torch=arcface_torch, identity_weight=identity_weight,
                         cache_steps=num_inference_steps, cache_seeds=1, retain_seeds=retain_seeds,
                         render_batch=render_batch, base_model_id=base_model_id)
        diffusers = _require("diffusers")
        # DDIM both ways with the same grid, so invert -> render round-trips; no clipping (it breaks inversion)
        self._train_scheduler = diffusers.DDIMScheduler.from_config(scheduler.config, clip_sample=False,
                                                                    set_alpha_to_one=True)
        accepted = inspect.signature(diffusers.DDIMInverseScheduler.__init__).parameters
        self._inverse_scheduler = diffusers.DDIMInverseScheduler.from_config(
            {k: v for k, v in scheduler.config.items() if k in accepted}, clip_sample=False, set_alpha_to_one=True)
        self.num_inference_steps = num_inference_steps
        size = unet.config.sample_size
        self.size = size if isinstance(size, int) else size[0]
        self.shape = (unet.config.in_channels, self.size, self.size)
        self.register_buffer("_w_avg", torch.zeros(math.prod(self.shape)), persistent=False)

    @classmethod
    def from_pretrained(cls, model_path: str | Path, insightface_pack: str | Path | InsightFaceIdentity | None = None,
                        arcface_torch: str | Path | TorchArcFace | nn.Module | None = None,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        **kwargs) -> DDPMBackend:
        """Load a local DDPM folder: pipeline layout (``unet/``, ``scheduler/``) or flat (``config.json`` +
        ``scheduler_config.json``). Nothing is downloaded."""
        diffusers = _require("diffusers")
        root = Path(model_path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"DDPM model folder not found: {root}")
        unet_dir = _first_dir("UNet2DModel", [root / "unet", root])
        dev, dt = pick_device_dtype(device, dtype)
        unet = diffusers.UNet2DModel.from_pretrained(unet_dir, torch_dtype=dt, local_files_only=True)
        sch_dir = next((d for d in (root / "scheduler", root) if (d / "scheduler_config.json").is_file()), None)
        if sch_dir is not None:
            sched = diffusers.DDPMScheduler.from_pretrained(sch_dir, local_files_only=True)
        else:  # the DDPM paper's schedule, as google/ddpm-* use
            log.warning("no scheduler_config.json in %s: using linear betas 1e-4..0.02 over 1000 steps", root)
            sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                            beta_schedule="linear")
        identity = insightface_pack
        if identity is not None and not isinstance(identity, InsightFaceIdentity):
            identity = InsightFaceIdentity(identity)
        if arcface_torch is not None and not isinstance(arcface_torch, TorchArcFace):
            arcface_torch = TorchArcFace(arcface_torch) if isinstance(arcface_torch, nn.Module) else \
                load_torch_arcface(arcface_torch)
        return cls(unet, sched, identity, arcface_torch=arcface_torch, device=dev, dtype=dt,
                   base_model_id=f"diffusers/ddpm:{root.name}", **kwargs)

    # -- latent space ----------------------------------------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        return self._w_avg.cpu()

    @property
    def latent_dim(self) -> int:
        return math.prod(self.shape)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def sample_views(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from x_T is deterministic: there is no view (zeros, kept for the contract)."""
        return torch.zeros(n, 1)

    def canonical_views(self, n: int) -> torch.Tensor:
        return torch.zeros(n, 1)

    # -- images ----------------------------------------------------------------------------------------------------
    def _to_images(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0.float() + 1) / 2).clamp(0, 1)

    def _ddim(self, x: torch.Tensor, keep: bool = False):
        sched = type(self._train_scheduler).from_config(self._train_scheduler.config)
        sched.set_timesteps(self.num_inference_steps, device=self.device)
        states, x0s = [], []
        for t in sched.timesteps:
            eps = self.predict_noise(x, t)
            out = sched.step(eps, t, x)
            if keep:
                states.append(x)
                x0s.append(out.pred_original_sample)
            x = out.prev_sample
        if keep:
            return x, torch.stack(states), torch.stack(x0s), sched.timesteps.clone()
        return x

    def _generate(self, latent: torch.Tensor, return_features: bool = False):
        images, feats = [], []
        for sl in self._chunks(len(latent)):
            x = self._ddim(latent[sl].to(self.device).float().view(-1, *self.shape))
            images.append(self._to_images(x).cpu())
            feats.append(x.cpu())
        img = torch.cat(images)
        return (img, torch.cat(feats)) if return_features else img

    def synthesize(self, latent: torch.Tensor, view: torch.Tensor, return_features: bool = False):
        """Full DDIM sampling with autograd enabled (contract; training uses the step objective instead)."""
        return self._generate(latent, return_features)

    @torch.no_grad()
    def render(self, latent: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """x_T latents (B, C*H*W) -> images (B, 3, H, W) in [0, 1] by deterministic DDIM."""
        return self._generate(latent)

    def face_crop(self):
        """Uploads are aligned to ArcFace's 5-point template scaled to the checkpoint's size (an approximation of
        CelebA-HQ-style framing; the insightface judge re-detects on it)."""
        from ..faces import FaceCrop

        return FaceCrop.arcface(self.size)

    @torch.no_grad()
    def invert(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos (B, 3, H, W) in [0, 1] (aligned face crops, as the model was trained on) -> DDIM-inverted x_T."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = (x * 2 - 1).to(self.device)
        out = []
        for sl in self._chunks(len(x)):
            xs = x[sl]
            inv = type(self._inverse_scheduler).from_config(self._inverse_scheduler.config)
            inv.set_timesteps(self.num_inference_steps, device=self.device)
            for t in inv.timesteps:
                xs = inv.step(self.predict_noise(xs, t), t, xs).prev_sample
            out.append(xs.reshape(len(xs), -1).cpu())
        return torch.cat(out), self.canonical_views(len(images))

    # -- unlearning ------------------------------------------------------------------------------------------------
    def trajectory_pool(self, x_t: torch.Tensor) -> dict:
        _, states, x0s, ts = self._ddim(x_t.to(self.device).float().view(-1, *self.shape), keep=True)
        # x0-estimates are images: clamp to the data range (the checkpoint's own sampler clips them) so the
        # matching targets stay bounded at the noisiest steps; the states themselves stay unclipped
        return {"x": states, "x0": x0s.clamp(-1, 1), "t": ts}  # (S, B, C, H, W), (S, B, C, H, W), (S,)
