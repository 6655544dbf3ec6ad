"""MTCNN's three networks (P-Net, R-Net, O-Net) as plain torch modules, loaded from ``assets/mtcnn``.

The architecture and the weights are those of MTCNN (Zhang et al., 2016) as converted to PyTorch by
facenet-pytorch 2.6.0 (MIT licence, Copyright (c) 2019 Timothy Esler; notice in ``assets/mtcnn/LICENSE``).
The code here is our own; parameter names match facenet-pytorch's so its state dicts load unchanged.
``scripts/convert_mtcnn_weights.py`` rebuilds the safetensors file from the wheel.

Inputs are RGB images scaled as ``(pixel - 127.5) / 128`` on the 0..255 scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..assets import asset_path

WEIGHTS_FILE = "mtcnn.safetensors"


def _flatten_hwc(x: torch.Tensor) -> torch.Tensor:
    """Flatten (B, C, H, W) in the (W, H, C) order the converted dense layers expect."""
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class PNet(nn.Module):
    """Proposal network: fully convolutional, a face score and a box offset per 12 x 12 window (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> offsets (B, 4, h, w), face probability (B, h, w)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)[:, 1]


class RNet(nn.Module):
    """Refinement network: 24 x 24 crops -> face probability and box offsets."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 24, 24) -> offsets (B, 4), face probability (B,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_hwc(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)[:, 1]


class ONet(nn.Module):
    """Output network: 48 x 48 crops -> face probability, box offsets and five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # 5 x then 5 y, as fractions of the box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, 48, 48) -> offsets (B, 4), landmarks (B, 10), face probability (B,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_hwc(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)[:, 1]


class MTCNNNetworks(nn.Module):
    """The three cascade stages, frozen, in eval mode."""

    def __init__(self):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> MTCNNNetworks:
        """Load ``assets/mtcnn/mtcnn.safetensors`` (keys ``pnet.*``, ``rnet.*``, ``onet.*``); never downloads."""
        nets = cls()
        state = load_file(str(path) if path else str(asset_path("mtcnn", WEIGHTS_FILE)))
        nets.load_state_dict(state, strict=True)
        for p in nets.parameters():
            p.requires_grad_(False)
        return nets.eval()
