"""A compact style-based, identity-conditioned face generator (the embedded default).

Latent layout, as Arc2Face conditions Stable Diffusion on ArcFace: an identity embedding ``e`` (from the
``arcface`` network) is mapped by an MLP to the identity latent ``w``; a view vector ``v`` (pose, expression,
light, background, framing) is mapped to a view code. Every synthesis layer is modulated by [w, view code]
(StyleGAN2 weight (de)modulation). Synthesis runs 4 -> 8 -> 16 -> 32 -> 64; each block after the first ends
in an ``adapter site`` (an identity module) between its two convolutions and its ToRGB, where ODE adapters
attach by name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..faceworld.attributes import decode_view, sample_identities
from ..faceworld.factors import identity_vector
from ..ranges import GENERATOR_TRAIN


@dataclass
class GeneratorConfig:
    embedding_dim: int = 128
    view_dim: int = 21
    w_dim: int = 256
    view_code_dim: int = 96
    mapping_layers: int = 4
    channels: dict[int, int] = field(default_factory=lambda: {4: 256, 8: 128, 16: 80, 32: 40, 64: 20})
    resolution: int = 64
    # "arcface": the identity input is a unit arcface embedding; "factors": the face world's factor vector
    conditioning: str = "arcface"
    # > 0: every block after the first also sees the face-frame coordinates of its pixels (from the view's
    # roll, scale and shift) with this many sine/cosine octaves, so small features can be placed exactly
    coord_octaves: int = 0
    # > 0: a layout head predicts this many face landmarks (eyes, irises, brows, nose, mouth, ...) from
    # (w, view), and every block after the first sees each pixel's offset from each of them (``layout_scale``
    # converts face units to the offsets' unit): a small feature is then drawn where the offsets are small
    layout_landmarks: int = 0
    layout_scale: float = 8.0
    # > 0: coordinates and landmark offsets are computed at most at this resolution; a larger block adds its
    # position term at that resolution, bilinearly upsampled (they vary over ~4 px: a 64-px grid costs a
    # third of a render and adds little)
    position_resolution: int = 0
    # resolution -> rank r: that block's upsampling conv becomes a 1x1 conv to r channels before the upsample
    # and an r -> C 3x3 conv after it (the same map when r is full rank, less work at the high resolution)
    upsample_rank: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        d = dict(d)
        d["channels"] = {int(k): int(v) for k, v in d["channels"].items()}
        d["upsample_rank"] = {int(k): int(v) for k, v in d.get("upsample_rank", {}).items()}
        return cls(**d)


class _Mlp(nn.Sequential):
    def __init__(self, din: int, dout: int, layers: int, hidden: int):
        mods, d = [], din
        for i in range(layers):
            o = dout if i == layers - 1 else hidden
            mods += [nn.Linear(d, o), nn.LeakyReLU(0.2)] if i < layers - 1 else [nn.Linear(d, o)]
            d = o
        super().__init__(*mods)


class ModulatedConv(nn.Module):
    """Conv whose input channels are scaled by a per-sample style, output demodulated (StyleGAN2)."""

    def __init__(self, cin: int, cout: int, style_dim: int, kernel: int = 3, demodulate: bool = True,
                 upsample: bool = False, activate: bool = True, rank: int = 0):
        super().__init__()
        # rank > 0: the kernel is factored as weight (cout, rank, k, k) after reduce (rank, cin); the reduction
        # runs before the upsample, where the map has a quarter of the pixels
        self.reduce = nn.Parameter(torch.randn(rank, cin) / math.sqrt(rank)) if rank else None
        self.weight = nn.Parameter(torch.randn(cout, rank or cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(style_dim, cin)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)
        self.scale = 1 / math.sqrt(cin * kernel * kernel)
        self.demodulate, self.upsample, self.activate, self.padding = demodulate, upsample, activate, kernel // 2

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.affine(style)
        w = self.weight * self.scale
        gain = math.sqrt(2) if self.activate else 1.0
        if self.weight.shape[-1] == 1 and not self.upsample:
            return self._pointwise(x, s, w.flatten(1), gain)
        if self.reduce is not None:  # modulate and reduce in one per-sample matmul
            x = pointwise_linear(x, s[:, :, None] * self.reduce.T[None])
        else:
            x = x * s[:, :, None, None]
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        y = F.conv2d(x, w, padding=self.padding)
        if self.reduce is not None:  # demodulate by the kernel the factored pair applies
            w = self.effective_weight() * self.scale
        # leaky_relu(a) * g == leaky_relu(a * g) for g > 0: the activation gain rides on the demodulation
        # and bias, so demodulate + bias + gain is one fused multiply-add over the feature map
        bias = (self.bias * gain)[None, :, None, None]
        if self.demodulate:
            d = torch.rsqrt((s.square() @ w.square().sum(dim=(2, 3)).T) + 1e-8) * gain
            y = torch.addcmul(bias, y, d[:, :, None, None])
        else:
            y = y * gain + bias if self.activate else y + bias
        return F.leaky_relu(y, 0.2) if self.activate else y

    def effective_weight(self) -> torch.Tensor:
        """(cout, cin, k, k): the kernel a factored conv applies (its own weight when not factored)."""
        if self.reduce is None:
            return self.weight
        return torch.einsum("orij,rc->ocij", self.weight, self.reduce)

    def _pointwise(self, x: torch.Tensor, s: torch.Tensor, w: torch.Tensor, gain: float) -> torch.Tensor:
        """1x1 case as one batched matmul per sample with style, demodulation and gain folded into a (B, Cin,
        Cout) weight: the feature map is read once instead of being scaled, convolved, scaled again."""
        wb = s[:, :, None] * w.T[None]  # (B, Cin, Cout)
        if self.demodulate:
            wb = wb * torch.rsqrt(wb.square().sum(1, keepdim=True) + 1e-8)
        y = pointwise_linear(x, wb * gain, self.bias * gain)
        return F.leaky_relu(y, 0.2) if self.activate else y


def pointwise_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 convolution of ``x`` (B, Cin, H, W) as a matmul over its channels-last pixels: ``weight`` is
    (Cin, Cout) or per sample (B, Cin, Cout). The result is channels-last memory, like the convolutions'."""
    b, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(b, h * w, c) @ weight  # (B, HW, Cout); a view when x is channels-last
    if bias is not None:
        y = y + bias
    return y.view(b, h, w, -1).permute(0, 3, 1, 2)


class AdapterSite(nn.Identity):
    """Named point in the synthesis path where an adapter may transform what passes: a block's feature map
    (kind "conv", (B, C, H, W)) or the identity latent before synthesis reads it (kind "latent", (B, C))."""

    def __init__(self, name: str, channels: int, resolution: int, adapter_kind: str = "conv"):
        super().__init__()
        self.site_name, self.channels, self.resolution = name, channels, resolution
        self.adapter_kind = adapter_kind


def face_frame_xy(view: torch.Tensor, size: int, decoded: dict[str, torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Face-frame x, y (each (B, size, size)) of every pixel: the image frame with roll, scale, shift undone.
    ``decoded``: ``decode_view(view)`` when the caller has it (a render needs it at four resolutions)."""
    v = decoded if decoded is not None else decode_view(view)
    lin = (torch.arange(size, dtype=view.dtype, device=view.device) + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    scale = v["scale"].view(-1, 1, 1)
    dx, dy = (gx - v["shift_x"].view(-1, 1, 1)) / scale, (gy - v["shift_y"].view(-1, 1, 1)) / scale
    cr, sr = torch.cos(v["roll"]).view(-1, 1, 1), torch.sin(v["roll"]).view(-1, 1, 1)
    return cr * dx + sr * dy, -sr * dx + cr * dy


def face_frame_features(view: torch.Tensor, size: int, octaves: int,
                        xy: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(B, 2 + 4 * octaves, size, size): face-frame x, y of each pixel and their sine/cosine octaves.

    The face world places the whole face by roll, scale and shift; giving the synthesis the resulting
    coordinates turns "where is the eye" from something the convolutions must learn into an input.
    """
    x, y = xy if xy is not None else face_frame_xy(view, size)
    feats = torch.stack([x, y], dim=-1)  # (B, H, W, 2)
    if octaves:
        # every octave's sine and cosine in one sin call (cos a = sin(a + pi/2)): with a passive OpenMP wait
        # policy each transcendental call wakes the other thread, ~75 us on the 2-core CPU, whatever its size
        freqs = math.pi * 2.0 ** torch.arange(octaves, dtype=x.dtype, device=x.device)
        angle = feats.unsqueeze(-2) * freqs[:, None]  # (B, H, W, octaves, 2)
        angle = torch.stack([angle[..., 0], angle[..., 0] + math.pi / 2, angle[..., 1], angle[..., 1] + math.pi / 2],
                            dim=-1)  # per octave: sin fx, cos fx, sin fy, cos fy
        feats = torch.cat([feats, torch.sin(angle).flatten(-2)], dim=-1)
    return feats.permute(0, 3, 1, 2)  # channels-last memory: 1x1 layers read pixels


LAYOUT_FEATURES = 5  # per landmark: tanh offsets u, v; u^2, v^2; a Gaussian bump


def landmark_features(xy: tuple[torch.Tensor, torch.Tensor], landmarks: torch.Tensor, scale: float) -> torch.Tensor:
    """(B, 5 K, H, W) from face-frame pixel coordinates and (B, K, 2) landmarks: per landmark the squashed
    offsets u, v, their squares (a modulated sum of those is an ellipse of any size), and exp(-(du^2+dv^2)/2)."""
    x, y = xy
    d = torch.stack([x.unsqueeze(-1) - landmarks[:, None, None, :, 0],
                     y.unsqueeze(-1) - landmarks[:, None, None, :, 1]], dim=-1) * scale  # (B, H, W, K, 2)
    t = torch.tanh(d)  # one call each for tanh and exp (see face_frame_features)
    bump = torch.exp(-0.5 * d.square().sum(-1, keepdim=True))
    feats = torch.cat([t, t.square(), bump], dim=-1).flatten(3)  # channel k * 5 + (u, v, u^2, v^2, bump)
    return feats.permute(0, 3, 1, 2)  # channels-last memory, as the 1x1 layers read it


class SynthesisBlock(nn.Module):
    def __init__(self, cin: int, cout: int, style_dim: int, resolution: int, first: bool = False,
                 coord_dim: int = 0, layout_dim: int = 0, upsample_rank: int = 0):
        super().__init__()
        self.first = first
        if first:
            self.const = nn.Parameter(torch.randn(1, cout, resolution, resolution))
            self.conv1 = ModulatedConv(cout, cout, style_dim)
            self.conv2 = None
        else:
            self.conv1 = ModulatedConv(cin, cout, style_dim, upsample=True, rank=upsample_rank)
            self.conv2 = ModulatedConv(cout, cout, style_dim)
        self.site = AdapterSite(f"b{resolution}", cout, resolution)
        self.to_rgb = ModulatedConv(cout, 3, style_dim, kernel=1, demodulate=False, activate=False)
        self.coord = nn.Conv2d(coord_dim, cout, 1) if coord_dim and not first else None
        self.layout = None
        if layout_dim and not first:
            # landmark offsets -> features, modulated per sample (an identity's eye size scales its offsets);
            # no demodulation and zero weights: a generator trained without landmarks continues exactly where it
            # was, and the weights still get gradients (a zero gain on random weights would leave both stuck)
            self.layout = ModulatedConv(layout_dim, cout, style_dim, kernel=1, demodulate=False)
            nn.init.zeros_(self.layout.weight)

    def forward(self, x: torch.Tensor | None, rgb: torch.Tensor | None, style: torch.Tensor,
                coords: torch.Tensor | None = None, layout: torch.Tensor | None = None):
        if self.first:
            x = self.const.expand(style.shape[0], -1, -1, -1)
            x = self.conv1(x, style)
        else:
            x = self.conv1(x, style)
            position = None  # where things are: face-frame coordinates and landmark offsets, mapped to features
            if self.coord is not None:
                position = pointwise_linear(coords, self.coord.weight.flatten(1).T, self.coord.bias)
            if self.layout is not None:
                lay = self.layout(layout, style)
                position = lay if position is None else position + lay
            if position is not None:
                if position.shape[-1] != x.shape[-1]:  # computed on a coarser grid (config.position_resolution)
                    position = F.interpolate(position, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = x + position
            x = self.conv2(x, style)
            x = self.site(x)
        out = self.to_rgb(x, style)
        if rgb is not None:
            out = out + F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
        return x, out


class StyleFaceGenerator(nn.Module):
    """mapping(e) -> w; synthesis(w, view) -> image. ``render`` returns RGB in [0, 1]."""

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        self.config = c = config or GeneratorConfig()
        self.mapping = _Mlp(c.embedding_dim, c.w_dim, c.mapping_layers, c.w_dim)
        self.view_mapping = _Mlp(c.view_dim, c.view_code_dim, 3, c.view_code_dim)
        style_dim = c.w_dim + c.view_code_dim
        resolutions = sorted(c.channels)
        blocks, cin = [], c.channels[resolutions[0]]
        coord_dim = 2 + 4 * c.coord_octaves if c.coord_octaves else 0
        layout_dim = LAYOUT_FEATURES * c.layout_landmarks
        for i, r in enumerate(resolutions):
            blocks.append(SynthesisBlock(cin, c.channels[r], style_dim, r, first=i == 0, coord_dim=coord_dim,
                                         layout_dim=layout_dim, upsample_rank=c.upsample_rank.get(r, 0)))
            cin = c.channels[r]
        self.blocks = nn.ModuleList(blocks)
        self.layout = _Mlp(c.w_dim + c.view_dim, 2 * c.layout_landmarks, 3, 256) if c.layout_landmarks else None
        # where identity enters: every block's style and the layout head read w through this site, so an adapter
        # here changes who is drawn while every render stays one the generator can draw (resolution 0: no map)
        self.identity_site = AdapterSite("w", c.w_dim, 0, adapter_kind="latent")
        self.register_buffer("w_avg", torch.zeros(c.w_dim))
        self.register_buffer("prior_mean", torch.zeros(c.embedding_dim))
        self.register_buffer("prior_chol", torch.eye(c.embedding_dim))
        # channels-last conv weights let oneDNN skip a layout reorder per convolution: on 2 CPU cores a
        # batch-of-8 render takes ~30 ms instead of ~45 ms and an engine step ~1/3 less (same numbers up to
        # float rounding; weights are saved contiguous, so the files and the weight hash do not change)
        self.to(memory_format=torch.channels_last)

    # -- latent space ------------------------------------------------------------------------------------
    @property
    def factor_conditioned(self) -> bool:
        return self.config.conditioning == "factors"

    def map_identity(self, embedding: torch.Tensor) -> torch.Tensor:
        """Identity input (B, E) -> identity latent w (B, W): a unit embedding, or a face-world factor vector."""
        if self.factor_conditioned:
            return self.mapping(embedding)
        return self.mapping(F.normalize(embedding, dim=1) * math.sqrt(embedding.shape[1]))

    def sample_embeddings(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random identity inputs: for embeddings, the fitted Gaussian prior projected to the unit sphere; for
        factors, the factor vectors of random face-world people of the generator's training range (the exact
        prior: a Gaussian over one-hot categories would draw half-glasses)."""
        if self.factor_conditioned:
            ids = GENERATOR_TRAIN.start + torch.randint(len(GENERATOR_TRAIN), (n,), generator=generator)
            return identity_vector(sample_identities(ids.tolist()))
        z = torch.randn(n, self.config.embedding_dim, generator=generator)
        e = self.prior_mean + z @ self.prior_chol.T
        return e if self.factor_conditioned else F.normalize(e, dim=1)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.map_identity(self.sample_embeddings(n, generator))

    @torch.no_grad()
    def fit_prior(self, embeddings: torch.Tensor, samples: int = 4096) -> None:
        """Fit the identity prior (Gaussian on embeddings) and the latent mean w_avg (over ``samples`` draws)."""
        e = embeddings.float() if self.factor_conditioned else F.normalize(embeddings.float(), dim=1)
        self.prior_mean.copy_(e.mean(0))
        cov = torch.cov(e.T) + 1e-5 * torch.eye(e.shape[1])
        self.prior_chol.copy_(torch.linalg.cholesky(cov))
        self.w_avg.copy_(self.map_identity(self.sample_embeddings(samples, torch.Generator().manual_seed(0))).mean(0))

    # -- synthesis ---------------------------------------------------------------------------------------
    def synthesize(self, w: torch.Tensor, view: torch.Tensor, return_features: bool = False):
        """Differentiable synthesis; returns unclamped RGB (about [0, 1]) and optionally the last features."""
        if w.dim() != 2 or view.dim() != 2 or w.shape[0] != view.shape[0]:
            raise ValueError(f"expected w (B, {self.config.w_dim}) and view (B, {self.config.view_dim}), "
                             f"got {tuple(w.shape)} and {tuple(view.shape)}")
        w = self.identity_site(w)
        style = torch.cat([w, self.view_mapping(view)], dim=1)
        landmarks = self.predict_landmarks(w, view) if self.layout is not None else None
        x = rgb = None
        decoded = decode_view(view) if self.config.coord_octaves or self.layout is not None else None
        grids: dict[int, tuple] = {}  # resolution -> (coordinate features, landmark features), shared by blocks
        for block in self.blocks:
            coords = layout = None
            if block.coord is not None or block.layout is not None:
                size = block.site.resolution
                if self.config.position_resolution:
                    size = min(size, self.config.position_resolution)
                if size not in grids:
                    xy = face_frame_xy(view, size, decoded)
                    grids[size] = (
                        face_frame_features(view, size, self.config.coord_octaves, xy)
                        if self.config.coord_octaves else None,
                        landmark_features(xy, landmarks, self.config.layout_scale) if landmarks is not None else None)
                coords, layout = grids[size]
            x, rgb = block(x, rgb, style, coords, layout)
        img = rgb * 0.5 + 0.5
        return (img, x) if return_features else img

    def predict_landmarks(self, w: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """(B, K, 2) face-frame landmark positions from the identity latent and the view (the layout head)."""
        if self.layout is None:
            raise ValueError("this generator has no layout head (config.layout_landmarks == 0)")
        return self.layout(torch.cat([w, view], dim=1)).view(w.shape[0], -1, 2)

    def render(self, w: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return self.synthesize(w, view).clamp(0, 1)

    @property
    def adapter_sites(self) -> dict[str, AdapterSite]:
        """The identity latent's site "w", then each block's "b<resolution>" after the first."""
        return {self.identity_site.site_name: self.identity_site,
                **{b.site.site_name: b.site for b in self.blocks if not b.first}}

    # -- persistence -------------------------------------------------------------------------------------
    def weight_hash(self) -> str:
        """Content hash of the weights: adapters record it and refuse to load onto another base."""
        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        meta = {"config": asdict(self.config), **(extra or {})}
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> StyleFaceGenerator:
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        model = cls(GeneratorConfig.from_dict(meta["config"]))
        model.load_state_dict(load_file(directory / "model.safetensors"))
        model.eval()
        return model
