"""Face-identity embedding networks trained on the face world.

Two deliberately different architectures: ``ArcFaceNet`` (residual, flattened spatial head, as in ArcFace's
IR nets) drives the identity *loss*; ``JudgeNet`` (plain depthwise-separable stack, global pooling) only
*scores*. Keeping them apart means a method cannot look good by fooling the network it trained against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 64


def prepare_images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                               antialias=True)
    return images * 2 - 1


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = (nn.Identity() if cin == cout and stride == 1 else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.short(x)


class ArcFaceNet(nn.Module):
    """Compact IR-style residual network: 64x64 RGB -> L2-normalised embedding."""

    def __init__(self, embedding_dim: int = 128, widths: tuple[int, ...] = (32, 64, 96, 128)):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.PReLU(w0))  # 32
        blocks, cin = [], w0
        for w in widths:
            blocks.append(_Residual(cin, w, 2))  # 16, 8, 4, 2
            cin = w
        self.blocks = nn.Sequential(*blocks)
        side = INPUT_SIZE // 2 ** (len(widths) + 1)
        self.head = nn.Sequential(nn.BatchNorm2d(cin), nn.Flatten(), nn.Linear(cin * side * side, embedding_dim),
                                  nn.BatchNorm1d(embedding_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.blocks(self.stem(prepare_images(images)))), dim=1)


class _Separable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class JudgeNet(nn.Module):
    """Plain depthwise-separable network with global average pooling: a different inductive bias."""

    def __init__(self, embedding_dim: int = 128, widths: tuple[int, ...] = (48, 96, 160, 256)):
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 5, 2, 2, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        layers, cin = [], w0
        for w in widths:
            layers += [_Separable(cin, w, 2), _Separable(w, w, 1)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin * 2, embedding_dim), nn.BatchNorm1d(embedding_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.features(self.stem(prepare_images(images)))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return F.normalize(self.head(pooled), dim=1)


ARCHITECTURES: dict[str, type[nn.Module]] = {"arcface": ArcFaceNet, "judge": JudgeNet}
