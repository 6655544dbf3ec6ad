"""The contract between the unlearning engine and a generator backend.

The engine (targets, objectives, ForgetJob, metrics) only talks to this interface, so the embedded face
generator and the diffusers backends share one engine. A *latent* is the identity code (B, D); a *view* is
everything else that changes between images of one person (pose/light for the embedded model; noise seed
and timestep for diffusion models).

``renders_fast``: whether rendering a few hundred images is cheap enough for work done once per forget run (the
extrapolated target's stop search, view anchors); diffusion backends say False. Nothing here is optional: callers
ask the backend, they never probe it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class GeneratorBackend(Protocol):
    """Everything the engine, metrics, studio and CLI ask of a backend; nobody probes for more.

    A new backend is one class with these members plus ``registry.register_backend(cls)``.
    """

    name: str  # the registry name (CLI --backend)
    base_model_id: str
    w_avg: torch.Tensor
    objective: str  # which per-step objective trains its adapters (unlearning/step_objectives.OBJECTIVES)
    face_world: bool  # draws face-world people (the app's examples, add-by-id, face-world retained identities)
    has_views: bool  # whether one latent renders differently per view (False: one view is enough)
    image_size: int  # square size of its renders and of the crops it reads
    reads_whole_photo: bool  # finds faces itself (True) or reads crops aligned to ``face_crop()`` (False)
    renders_fast: bool  # whether a few hundred renders per forget run are affordable (see the module docstring)

    @classmethod
    def from_options(cls, **options) -> GeneratorBackend: ...

    def identity_networks(self) -> list[nn.Module]: ...

    def face_crop(self): ...

    def report_sizes(self, eval_samples: int | None = None) -> dict: ...

    def describe(self) -> dict: ...

    def label(self, model_path=None) -> str: ...

    @property
    def adapter_sites(self) -> dict[str, nn.Module]: ...

    @property
    def forget_sites(self) -> list[str]:
        """The adapter sites a forget run trains when its config names none (some or all of ``adapter_sites``)."""
        ...

    def weight_hash(self) -> str: ...

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def sample_views(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def canonical_views(self, n: int) -> torch.Tensor: ...

    def synthesize(self, latent: torch.Tensor, view: torch.Tensor,
                   return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def render(self, latent: torch.Tensor, view: torch.Tensor) -> torch.Tensor: ...

    def invert(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def parameter_count(self) -> int: ...

    def loss_identity_model(self) -> nn.Module: ...

    def prepare_adapter(self, adapter: nn.Module) -> None: ...


def renders_fast(backend) -> bool:
    """Whether a few hundred renders per forget run are affordable on ``backend`` (see the module docstring)."""
    return bool(backend.renders_fast)
