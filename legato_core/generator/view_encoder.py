"""View encoder: image -> normalised view vector (pose, expression, light, background, framing).

Half of inversion: the identity half comes from the ``arcface`` embedding, the view half from this network,
trained by regression on face-world images whose view factors are known. The factor-conditioned generator uses
the same network, wider, to read identity factors and view together (``name="face_encoder"``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class ViewEncoder(nn.Module):
    def __init__(self, view_dim: int = 21, width: int = 32):
        super().__init__()
        w = width
        layers, cin = [], 3
        for cout in (w, 2 * w, 4 * w, 4 * w):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 16, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, view_dim))
        self.view_dim, self.width = view_dim, width

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (64, 64):
            images = nn.functional.interpolate(images, size=(64, 64), mode="bilinear", antialias=True)
        return torch.tanh(self.head(self.features(images * 2 - 1))) * 1.05

    def save_pretrained(self, directory: str | Path, extra: dict | None = None, name: str = "view_encoder") -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, directory / f"{name}.safetensors")
        (directory / f"{name}.json").write_text(
            json.dumps({"view_dim": self.view_dim, "width": self.width, **(extra or {})}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, name: str = "view_encoder") -> ViewEncoder:
        directory = Path(directory)
        meta = json.loads((directory / f"{name}.json").read_text())
        enc = cls(meta["view_dim"], meta["width"])
        enc.load_state_dict(load_file(directory / f"{name}.safetensors"))
        return enc.eval()
