"""One place that turns a backend name and local paths into a backend, for the CLI and the app.

The CLI (``forget``, ``render``, ``bench``) and ``app.py`` take these flags and map them one to one onto
:class:`BackendSpec` and :func:`load_backend`'s keyword arguments (the app also reads them from ``LEGATO_*``
environment variables, so a Hugging Face Space can be configured without flags):

    --backend {embedded,arc2face,ddpm}   kind             (LEGATO_BACKEND; default embedded)
    --model-path PATH                    model_path       (LEGATO_MODEL_PATH; arc2face: Arc2Face's models/ folder;
                                                           ddpm: the checkpoint folder; embedded: optional
                                                           generator folder)
    --base-model-path PATH               base_model_path  (LEGATO_BASE_MODEL_PATH; arc2face: local Stable Diffusion
                                                           1.5 for vae/, tokenizer/, scheduler/ when model-path
                                                           lacks them)
    --insightface-pack PATH              insightface_pack (LEGATO_INSIGHTFACE_PACK; folder with the pack's .onnx
                                                           files, e.g. antelopev2; also the judge)
    --arcface-torch PATH                 arcface_torch    (LEGATO_ARCFACE_TORCH; optional differentiable ArcFace,
                                                           TorchScript .pt or .pt2)
    --device {cuda,cpu}  --dtype {bf16,fp16,fp32}  --gradient-checkpointing  --inference-steps N
                                                          (LEGATO_DEVICE, LEGATO_DTYPE, LEGATO_GRADIENT_CHECKPOINTING,
                                                           LEGATO_INFERENCE_STEPS; diffusers backends only)
    --judge {embedded,dlib,insightface}  the network that scores metrics (CLI forget; see :func:`resolve_judge`):
                                         embedded for the embedded backend, dlib for arc2face/ddpm

    --allow-downloads                    allow_downloads  (LEGATO_ALLOW_DOWNLOADS=1) --model-path, --base-model-path
                                                          and --insightface-pack may then be hub ids (owner/name)

Nothing downloads by default: every path must exist locally, and a missing one is reported with its flag (a hub id
without --allow-downloads too, naming that flag; see ``legato_core.hub``).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .. import hub

# name -> backend class, or "module:Class" until first use; register_backend adds one
BACKENDS: dict[str, type | str] = {"embedded": "legato_core.backends.embedded:EmbeddedFaceBackend",
                                   "arc2face": "legato_core.backends.diffusion:Arc2FaceBackend",
                                   "ddpm": "legato_core.backends.diffusion:DDPMBackend"}
IDENTITY_BACKENDS = ("embedded", "insightface", "torch-arcface")
JUDGES = ("embedded", "dlib", "insightface")
DEVICES = ("cuda", "cpu")
DTYPES = ("bf16", "fp16", "fp32")
# option -> (flag, what it must be); the flag names make errors actionable from the command line
PATH_FLAGS = {"model_path": ("--model-path", "folder"), "base_model_path": ("--base-model-path", "folder"),
              "insightface_pack": ("--insightface-pack", "folder"), "arcface_torch": ("--arcface-torch", "file")}
DIFFUSERS_ONLY = {"base_model_path": "--base-model-path", "arcface_torch": "--arcface-torch", "device": "--device",
                  "dtype": "--dtype", "gradient_checkpointing": "--gradient-checkpointing",
                  "num_inference_steps": "--inference-steps"}


def backend_class(name: str) -> type:
    """The backend class registered under ``name`` (imported on first use: diffusers loads only when asked)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {tuple(BACKENDS)}")
    cls = BACKENDS[name]
    if isinstance(cls, str):
        module, attr = cls.split(":")
        cls = BACKENDS[name] = getattr(importlib.import_module(module), attr)
    return cls


def register_backend(cls: type) -> type:
    """Make a backend class loadable by its ``name`` (CLI ``--backend``, app, ``load_backend``)."""
    if cls.name in BACKENDS:
        raise ValueError(f"a backend named {cls.name!r} is already registered")
    BACKENDS[cls.name] = cls
    return cls


def load_backend(kind: str, **paths):
    """Build a generator backend: ``load_backend("arc2face", model_path=..., insightface_pack=...)``.

    Keyword arguments: ``model_path``, ``base_model_path`` (arc2face), ``insightface_pack``, ``arcface_torch``,
    ``device``, ``dtype``, ``gradient_checkpointing``, ``sites`` and any other backend option (e.g.
    ``num_inference_steps``); ``None`` values are ignored so CLI defaults can be passed straight through. Each
    backend class checks its own options (``from_options``).
    """
    opts = {k: v for k, v in paths.items() if v is not None}
    return backend_class(kind).from_options(**opts)


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


def backend_kind(backend) -> str:
    """The registered name of a backend ("embedded", "arc2face", "ddpm", or a name registered elsewhere)."""
    return backend.name


EMBEDDED_LABEL = "embedded face world (CPU)"


def backend_label(backend, model_path: str | Path | None = None) -> str:
    """One human line naming the live backend, e.g. "embedded face world (CPU)" or
    "arc2face from /models/Arc2Face/models (cuda, bf16)": what the app shows so nobody mistakes which model runs."""
    return backend.label(model_path)


def resolve_judge(judge: str | None, kind: str, insightface_pack: str | Path | None = None) -> str:
    """Which network scores the metrics: the embedded judge for the embedded backend; dlib's ResNet (offline, from
    installed packages) for the diffusers backends, whose renders the embedded judge (64 x 64 face-world faces)
    cannot score. insightface is refused as the judge of a diffusers backend: its pack (--insightface-pack) already
    embeds the uploads that condition and train that backend, and a model must not be graded by its own network."""
    if judge is not None and judge not in JUDGES:
        raise ValueError(f"unknown judge {judge!r}; choose from {JUDGES}")
    if judge is None:
        judge = "embedded" if kind == "embedded" else "dlib"
    if judge == "embedded" and kind != "embedded":
        raise ValueError(f"the embedded judge only scores 64x64 face-world renders, not the {kind} backend's: use "
                         "--judge dlib (the default for arc2face/ddpm)")
    if judge != "embedded" and kind == "embedded":
        raise ValueError(f"--judge {judge} scores real faces; the embedded backend renders 64x64 face-world faces: "
                         "use --judge embedded (its default)")
    if judge == "insightface":
        if not insightface_pack:
            raise ValueError("--judge insightface needs --insightface-pack PATH")
        raise ValueError(f"--judge insightface would score the {kind} backend with the network of its own "
                         "--insightface-pack, which embeds the identities it is conditioned and trained on; the judge "
                         "must be a different network: use --judge dlib (the default)")
    return judge


def load_judge(judge: str, insightface_pack: str | Path | None = None, backend=None):
    """The judge network named by :func:`resolve_judge`, checked against the backend's own identity networks
    (:func:`check_judge_independent`) when a backend is given."""
    if judge == "dlib":
        from ..identity.dlib_judge import load_dlib_judge

        net = load_dlib_judge()
    elif judge == "insightface":
        net = load_identity_backend("insightface", Path(insightface_pack).expanduser())
    else:
        net = load_identity_backend("embedded")
    if backend is not None:
        check_judge_independent(backend, net)
    return net


def _network_fingerprint(net) -> str:
    """What makes two identity networks the same: the recognition model file for an insightface pack, else the
    module's weights (names, shapes and strided samples)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    rec = getattr(getattr(net, "app", None), "models", {}).get("recognition")
    if rec is not None:
        path = Path(rec.model_file)
        h.update(str(path.stat().st_size).encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
        return "onnx:" + h.hexdigest()[:16]
    if isinstance(net, torch.nn.Module):
        for name, t in sorted(net.state_dict().items()):
            flat = t.detach().reshape(-1).float().cpu()
            h.update(f"{name.split('.', 1)[-1]}{tuple(t.shape)}".encode())
            h.update(flat[:: max(1, flat.numel() // 64)][:64].numpy().tobytes())
        return "torch:" + h.hexdigest()[:16]
    return f"object:{id(net)}"


def network_name(net) -> str:
    """A human name for an identity network, as reports print it."""
    if hasattr(net, "describe"):
        return net.describe()
    arch = getattr(net, "architecture", None)
    return f"embedded {arch}" if arch else type(net).__name__


def training_identity_networks(backend) -> list:
    """Every identity network the backend trains or is conditioned with: its identity-loss network, the insightface
    pack that embeds its uploads, a differentiable torch ArcFace."""
    nets = []
    for net in backend.identity_networks():
        if all(net is not n for n in nets):
            nets.append(net)
    return nets


def check_judge_independent(backend, judge) -> dict:
    """Raise ValueError when the judge is one of the backend's training identity networks (same object or same
    weights); else return ``{"training_identity": ..., "judge": ...}`` naming both for reports."""
    train = training_identity_networks(backend)
    jf = _network_fingerprint(judge)
    for net in train:
        if net is judge or _network_fingerprint(net) == jf:
            raise ValueError(f"the judge ({network_name(judge)}) is the network this backend trains with "
                             f"({network_name(net)}): metrics must be scored by a different network")
    return {"training_identity": "; ".join(network_name(n) for n in train) or "none (epsilon-matching only)",
            "judge": network_name(judge)}


@dataclass
class BackendSpec:
    """What the backend flags chose; ``load()`` checks it first, so a wrong flag fails before any model loads."""

    kind: str = "embedded"
    model_path: str | None = None
    base_model_path: str | None = None
    insightface_pack: str | None = None
    arcface_torch: str | None = None
    device: str | None = None
    dtype: str | None = None
    gradient_checkpointing: bool = False
    num_inference_steps: int | None = None
    allow_downloads: bool = False

    @classmethod
    def from_args(cls, args) -> BackendSpec:
        """From an argparse namespace built with the CLI's ``add_backend_options`` (``--backend`` is ``kind``)."""
        fields = {k: getattr(args, k, None) for k in cls.__dataclass_fields__ if k != "kind"}
        fields["gradient_checkpointing"] = bool(fields["gradient_checkpointing"])
        fields["allow_downloads"] = hub.downloads_allowed(bool(fields["allow_downloads"]))
        return cls(getattr(args, "backend", None) or "embedded", **fields)

    @property
    def is_default(self) -> bool:
        return replace(self, allow_downloads=False) == BackendSpec()

    def check(self) -> None:
        """Raise ValueError/FileNotFoundError naming the flag: unknown choices, flags that do not apply to this
        kind, a required path left out, a local path that does not exist."""
        if self.kind not in BACKENDS:
            raise ValueError(f"unknown backend {self.kind!r}; choose from {BACKENDS}")
        if self.device is not None and self.device.split(":")[0] not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose from {DEVICES}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {DTYPES}")
        given = {k: v for k, v in asdict(self).items() if v not in (None, False) and k != "allow_downloads"}
        if self.kind == "embedded":
            extra = [flag for key, flag in DIFFUSERS_ONLY.items() if key in given]
            if extra:
                verb = "applies" if len(extra) == 1 else "apply"
                raise ValueError(f"{', '.join(extra)} only {verb} to the arc2face and ddpm backends "
                                 "(add --backend arc2face or --backend ddpm)")
        if self.kind == "ddpm" and "base_model_path" in given:
            raise ValueError("--base-model-path only applies to the arc2face backend (Stable Diffusion 1.5 parts)")
        if self.kind != "embedded" and not self.model_path:
            what = "Arc2Face's models/ folder" if self.kind == "arc2face" else "a local DDPM checkpoint folder"
            raise ValueError(f"the {self.kind} backend needs --model-path PATH ({what})")
        if self.kind == "arc2face" and not self.insightface_pack:
            raise ValueError("the arc2face backend needs --insightface-pack PATH: uploads are embedded with "
                             "insightface (antelopev2 + Arc2Face's arcface.onnx)")
        for key, (flag, what) in PATH_FLAGS.items():
            value = given.get(key)
            if value is None:
                continue
            if key in hub.HUB_FILES and hub.parse_hub_id(value) is not None:
                if not self.allow_downloads:
                    raise ValueError(hub.hub_error(flag, value))
                continue  # fetched by options() when the backend loads
            path = Path(value).expanduser()
            ok = path.is_dir() if what == "folder" else path.is_file()
            if not ok:
                raise FileNotFoundError(f"{flag} {path}: no such {what} (nothing is downloaded; give a local path)")
        if self.device is not None and self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device {self.device}: torch sees no CUDA device (use --device cpu)")

    def options(self) -> dict:
        """``load_backend`` keyword arguments; the embedded backend takes only ``model_path``. Hub ids are fetched
        here (only with ``allow_downloads``) and replaced by their local snapshot folders."""
        paths = {key: hub.resolve_location(getattr(self, key) or None, key, self.allow_downloads, flag,
                                           self.kind)
                 for key, (flag, _) in PATH_FLAGS.items() if key in hub.HUB_FILES}
        paths["arcface_torch"] = str(Path(self.arcface_torch).expanduser()) if self.arcface_torch else None
        if self.kind == "embedded":
            return {"model_path": paths["model_path"]}
        return {**paths, "device": self.device, "dtype": self.dtype,
                "gradient_checkpointing": self.gradient_checkpointing or None,
                "num_inference_steps": self.num_inference_steps}

    def load(self):
        self.check()
        return load_backend(self.kind, **self.options())

    def label(self, backend) -> str:
        return backend_label(backend, str(Path(self.model_path).expanduser()) if self.model_path else None)

    def judge(self, backend, judge: str | None = None):
        """The metrics judge for this spec (``judge``: a ``--judge`` choice, None for the default)."""
        return load_judge(resolve_judge(judge, self.kind, self.insightface_pack), self.insightface_pack, backend)
