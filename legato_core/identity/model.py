"""Identity models: a trained network plus its calibrated "same person" threshold."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..assets import asset_path
from .networks import ARCHITECTURES


class IdentityModel(nn.Module):
    """Embeds face images (B, 3, H, W) in [0, 1] to unit vectors; ``threshold`` is the same-person cosine."""

    def __init__(self, architecture: str, config: dict | None = None, threshold: float = 0.5):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown identity architecture {architecture!r}; choose from {sorted(ARCHITECTURES)}")
        self.architecture = architecture
        self.config = dict(config or {})
        self.net = ARCHITECTURES[architecture](**self.config)
        self.threshold = float(threshold)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        out = torch.cat([self.net(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        self.train(was)
        return out

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of paired images (no grad)."""
        return (self.embed(a) * self.embed(b)).sum(dim=1)

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, directory / "model.safetensors")
        meta = {"architecture": self.architecture, "config": self.config, "threshold": self.threshold}
        meta.update(extra or {})
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> IdentityModel:
        """Load ``assets/<name>/`` (``arcface``, ``judge``) or a directory with config.json + model.safetensors."""
        path = Path(name_or_path)
        if not (path / "config.json").exists():
            path = asset_path(str(name_or_path))
        meta = json.loads((path / "config.json").read_text())
        model = cls(meta["architecture"], meta.get("config"), meta.get("threshold", 0.5))
        model.net.load_state_dict(load_file(path / "model.safetensors"))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


_CACHE: dict[str, IdentityModel] = {}


def load_identity_model(name: str) -> IdentityModel:
    """Shared, frozen instance of a shipped identity model (loaded once per process)."""
    if name not in _CACHE:
        _CACHE[name] = IdentityModel.from_pretrained(name)
    return _CACHE[name]
