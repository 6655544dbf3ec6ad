"""One place that turns a backend name and local paths into a backend, for the CLI and the app.

Intended flags (the CLI/app map them one to one onto these keyword arguments):

    --backend {embedded,arc2face,ddpm}   kind
    --model-path PATH                    model_path       (arc2face: Arc2Face's models/ folder; ddpm: the checkpoint
                                                           folder; embedded: optional generator folder)
    --base-model-path PATH               base_model_path  (arc2face: local Stable Diffusion 1.5 for vae/, tokenizer/,
                                                           scheduler/ when model-path lacks them)
    --insightface-pack PATH              insightface_pack (folder with the pack's .onnx files, e.g. antelopev2)
    --arcface-torch PATH                 arcface_torch    (optional differentiable ArcFace, TorchScript .pt or .pt2)
    --device {cuda,cpu}  --dtype {bf16,fp16,fp32}  --gradient-checkpointing

Nothing here downloads: every path must exist locally.
"""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("embedded", "arc2face", "ddpm")
IDENTITY_BACKENDS = ("embedded", "insightface", "torch-arcface")


def load_backend(kind: str, **paths):
    """Build a generator backend: ``load_backend("arc2face", model_path=..., insightface_pack=...)``.

    Keyword arguments: ``model_path``, ``base_model_path`` (arc2face), ``insightface_pack``, ``arcface_torch``,
    ``device``, ``dtype``, ``gradient_checkpointing``, ``sites`` and any other backend option (e.g.
    ``num_inference_steps``); ``None`` values are ignored so CLI defaults can be passed straight through.
    """
    opts = {k: v for k, v in paths.items() if v is not None}
    if kind == "embedded":
        from .embedded import EmbeddedFaceBackend

        unknown = sorted(set(opts) - {"model_path"})
        if unknown:
            raise ValueError(f"the embedded backend takes only model_path, got {unknown}")
        return EmbeddedFaceBackend.from_pretrained(opts.get("model_path"))
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r}; choose from {BACKENDS}")
    if "model_path" not in opts:
        raise ValueError(f"the {kind} backend needs model_path (--model-path PATH, a local folder)")
    model_path = Path(opts.pop("model_path")).expanduser()
    if kind == "arc2face":
        from .diffusion import Arc2FaceBackend

        if "insightface_pack" not in opts:
            raise ValueError("the arc2face backend needs insightface_pack (--insightface-pack PATH): uploads are "
                             "embedded with insightface (antelopev2 + Arc2Face's arcface.onnx)")
        return Arc2FaceBackend.from_pretrained(model_path, **opts)
    from .diffusion import DDPMBackend

    opts.pop("base_model_path", None)
    return DDPMBackend.from_pretrained(model_path, **opts)


def load_identity_backend(kind: str, path: str | Path | None = None, **options):
    """Build an identity network: "insightface" (a local pack folder; the judge and upload embedder),
    "torch-arcface" (a differentiable TorchScript/.pt2 ArcFace) or "embedded" (the shipped networks; ``path``
    names one: "judge" (default) or "arcface")."""
    if kind == "insightface":
        from .insightface_identity import InsightFaceIdentity

        if path is None:
            raise ValueError("the insightface identity backend needs the pack folder (--insightface-pack PATH)")
        return InsightFaceIdentity(path, **options)
    if kind == "torch-arcface":
        from .insightface_identity import load_torch_arcface

        if path is None:
            raise ValueError("torch-arcface needs a TorchScript (.pt) or torch.export (.pt2) file")
        return load_torch_arcface(path, **options)
    if kind == "embedded":
        from ..identity.model import load_identity_model

        return load_identity_model(str(path) if path is not None else "judge")
    raise ValueError(f"unknown identity backend {kind!r}; choose from {IDENTITY_BACKENDS}")
