"""GUIDE/LEGATO unlearning losses: local, adjacency-aware and global preservation, plus trajectory consistency.

Each image term is  w_feat * MSE(features) + w_perc * perceptual + w_id * (1 - cos(identity embeddings)).

No VGG/LPIPS weights exist offline, so the perceptual term is an *arcface-feature distance*: squared
differences of channel-normalised activations of the training identity network (the ``arcface`` model,
never the judge), averaged over its stages, plus an L1 pixel term. It plays LPIPS' role: a distance in a
learned feature space rather than in pixels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LossWeights:
    feature_mse: float = 0.01
    perceptual: float = 1.0
    identity: float = 0.1
    pixel_l1: float = 1.0
    adjacency: float = 1.0
    preservation: float = 1.0
    trajectory: float = 1.0


class ArcFaceFeatureDistance(nn.Module):
    """LPIPS-like distance on the stages of a frozen identity CNN (unit-normalised channels, mean over space)."""

    def __init__(self, identity_net: nn.Module):
        super().__init__()
        net = identity_net.net if hasattr(identity_net, "net") else identity_net
        if not hasattr(net, "stem"):
            raise TypeError("the feature distance needs an identity network with .stem and stage blocks")
        self.stem = net.stem
        self.stages = list(getattr(net, "blocks", getattr(net, "features", [])))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        from ..identity.networks import _prepare

        x = self.stem(_prepare(images))
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample distance (B,)."""
        fa, fb = self.features(a), self.features(b)
        total = 0.0
        for x, y in zip(fa, fb, strict=True):
            x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
            total = total + (x - y).square().sum(1).mean(dim=(1, 2))
        return total / len(fa)


class ImageLoss(nn.Module):
    """The three-term (plus pixel) loss between an adapted render and its frozen-model target."""

    def __init__(self, identity_net: nn.Module, weights: LossWeights):
        super().__init__()
        self.identity_net = identity_net
        self.perceptual = ArcFaceFeatureDistance(identity_net)
        self.w = weights

    def forward(self, img: torch.Tensor, feat: torch.Tensor, target_img: torch.Tensor, target_feat: torch.Tensor,
                with_identity: bool = True) -> dict[str, torch.Tensor]:
        target_img, target_feat = target_img.detach(), target_feat.detach()
        terms = {
            "feature_mse": F.mse_loss(feat, target_feat),
            "perceptual": self.perceptual(img, target_img).mean(),
            "pixel_l1": (img - target_img).abs().mean(),
        }
        if with_identity:
            e, et = self.identity_net(img), self.identity_net(target_img).detach()
            terms["identity"] = (1 - (e * et).sum(1)).mean()
        total = sum(getattr(self.w, k) * v for k, v in terms.items())
        terms["total"] = total
        return terms


def trajectory_consistency(states: list[torch.Tensor]) -> torch.Tensor:
    """mean_j mean((s_j - s_{j-1})^2): the kinetic energy of the ODE path; keeps forgetting gradual."""
    if len(states) < 2:
        return states[0].new_zeros(())
    return torch.stack([(b - a).square().mean() for a, b in itertools.pairwise(states)]).mean()
