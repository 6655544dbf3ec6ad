"""The embedded default backend: the face-world style generator, its view encoder and the arcface network.

Runs offline on a laptop CPU from the weights in ``assets/``. Inversion = arcface embedding -> mapping
(identity latent) + view encoder (view), refined by a few steps of gradient descent on the pixels plus a
multi-view identity term: renders of the latent in a few *other* (fixed, seeded) views must keep the image's
arcface embedding. Pixels alone fit the one uploaded view and let the identity drift in views never seen.

A factor-conditioned generator (``GeneratorConfig.conditioning == "factors"``) is inverted the same way, except
that its face encoder reads the identity factors and the view from the image in one pass.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..assets import asset_path
from ..faceworld import encode_view, frontal_view, random_view_vectors
from ..generator.modeling import StyleFaceGenerator
from ..generator.view_encoder import ViewEncoder
from ..identity.feature_distance import ArcFaceFeatureDistance
from ..identity.model import IdentityModel, load_identity_model
from ..threads import single_threaded

BASE_MODEL_ID = "legato/embedded-faceworld-stylegen-64"


class EmbeddedFaceBackend(nn.Module):
    name = "embedded"
    base_model_id = BASE_MODEL_ID
    objective = "image"  # renders with gradients: GUIDE's image losses (unlearning/step_objectives.py)
    face_world = True  # draws face-world people: the app's examples, "add by id", face-world retained identities
    has_views = True  # pose, expression, light, background, framing
    image_size = 64
    reads_whole_photo = False  # uploads are detected and aligned to face_crop() first
    renders_fast = True  # a few hundred renders per forget run are cheap (target stop search, view anchors)

    @classmethod
    def from_options(cls, model_path: str | Path | None = None, **unknown) -> EmbeddedFaceBackend:
        """``load_backend("embedded", model_path=...)``: an optional generator folder, nothing else."""
        if unknown:
            raise ValueError(f"the embedded backend takes only model_path, got {sorted(unknown)}")
        return cls.from_pretrained(model_path)

    def report_sizes(self, eval_samples: int | None = None) -> dict:
        """unlearning_report sizes: its defaults (rendering is cheap), or ``eval_samples`` random identities."""
        return {} if eval_samples is None else {"n_retain": min(200, eval_samples), "n_fd": eval_samples}

    def describe(self) -> dict:
        return {"base_model_id": self.base_model_id, "device": "cpu", "dtype": "torch.float32",
                "sites": len(self.adapter_sites), "parameters": self.parameter_count(),
                "conditioning": self.generator.config.conditioning}

    def label(self, model_path: str | Path | None = None) -> str:
        """The line the app shows: which model runs."""
        return f"embedded face world from {model_path} (CPU)" if model_path else "embedded face world (CPU)"

    def __init__(self, generator: StyleFaceGenerator, view_encoder: ViewEncoder, arcface: IdentityModel,
                 refine_steps: int = 12, refine_lr: float = 0.05, identity_views: int = 1,
                 identity_weight: float = 0.5, perceptual_weight: float = 0.5):
        super().__init__()
        self.generator, self.view_encoder, self.arcface = generator.eval(), view_encoder.eval(), arcface.eval()
        # a factor-conditioned generator's encoder returns [identity factors, view] in one vector
        self.factor_dim = generator.config.embedding_dim if generator.factor_conditioned else 0
        for p in self.parameters():
            p.requires_grad_(False)
        self.refine_steps, self.refine_lr = refine_steps, refine_lr
        self.identity_views, self.identity_weight = identity_views, identity_weight
        self.perceptual_weight = perceptual_weight
        self._hash: str | None = None
        self._perceptual = ArcFaceFeatureDistance(arcface)
        # where a person's other photos invert around one of them, as a whitening matrix (D, D), for adapter scopes
        # that measure distance through it (scripts/inversion_scatter.py); None: not made for this generator
        self.inversion_whitening: torch.Tensor | None = None

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, **kwargs) -> EmbeddedFaceBackend:
        """Load a generator directory; its config.json may carry ``inversion`` settings (keyword arguments win)."""
        directory = Path(directory) if directory else asset_path("generator")
        generator = StyleFaceGenerator.from_pretrained(directory)
        encoder = ViewEncoder.from_pretrained(directory, "face_encoder" if generator.factor_conditioned else
                                              "view_encoder")
        inversion = json.loads((directory / "config.json").read_text()).get("inversion", {})
        backend = cls(generator, encoder, load_identity_model("arcface"), **{**inversion, **kwargs})
        backend.inversion_whitening = _inversion_whitening(directory / "inversion_scatter.safetensors", backend)
        return backend

    # -- latent space --------------------------------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        return self.generator.w_avg

    @property
    def latent_dim(self) -> int:
        return self.generator.config.w_dim

    @property
    def adapter_sites(self) -> dict[str, nn.Module]:
        return self.generator.adapter_sites

    @property
    def forget_sites(self) -> list[str]:
        """The identity latent "w", where identity enters synthesis (session 15): an adapter there moves the person
        to another face the generator draws, so every slider position is a crisp face. Adapters on the blocks'
        feature maps (b8-b32, the default up to session 14) recolour pixels and cannot move an eye: at full
        intensity they drew a ghost of the person and the target (docs/engine.md, the dial).
        ``ForgetConfig.sites`` still takes any of ``adapter_sites``."""
        return ["w"]

    def weight_hash(self) -> str:
        if self._hash is None:  # base weights are frozen: hash once
            self._hash = self.generator.weight_hash()
        return self._hash

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())

    def synthesis_parameters(self) -> list[nn.Parameter]:
        """The synthesis network's weights (what full fine-tuning baselines train; the mapping stays frozen)."""
        return list(self.generator.blocks.parameters())

    def prepare_adapter(self, adapter: nn.Module) -> None:
        """Adapters run on the CPU in float32, like the generator: nothing to move."""

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generator.sample_latents(n, generator)

    def sample_views(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return random_view_vectors(n, generator)

    def canonical_views(self, n: int) -> torch.Tensor:
        """Fixed evaluation views: the frontal view first, then seeded random ones."""
        views = random_view_vectors(n, torch.Generator().manual_seed(20_260_104))
        views[0] = encode_view(frontal_view(1))[0]
        return views

    # -- images ----------------------------------------------------------------------------------------------
    def synthesize(self, latent: torch.Tensor, view: torch.Tensor, return_features: bool = False):
        return self.generator.synthesize(latent, view, return_features)

    def render(self, latent: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return self.generator.render(latent, view)

    @torch.no_grad()
    def latent_identity(self, latents: torch.Tensor, views: int) -> torch.Tensor:
        """Unit arcface embeddings (B, views, E) of the *base* model's renders of ``latents`` in the first ``views``
        canonical views, whatever adapters the caller has active: what robust mode's gate reads
        (adapters/gate.py). Repeated rows are rendered once."""
        from ..adapters.activation import active

        unique, where = torch.unique(latents.detach(), dim=0, return_inverse=True)
        v = self.canonical_views(views)
        with active(self, []):
            images = self.generator.render(unique.repeat_interleave(views, 0), v.repeat(len(unique), 1))
        return self.arcface.embed(images).view(len(unique), views, -1)[where]

    def loss_identity_model(self) -> nn.Module:
        return self.arcface

    def identity_networks(self) -> list[nn.Module]:
        """Every identity network this backend trains with or is conditioned on (no judge may be one of them)."""
        return [self.arcface]

    @torch.no_grad()
    def encode_identity(self, images: torch.Tensor) -> torch.Tensor:
        if self.factor_dim:
            return self.generator.map_identity(self.view_encoder(images)[:, :self.factor_dim])
        return self.generator.map_identity(self.arcface.embed(images))

    @torch.no_grad()
    def encode_view(self, images: torch.Tensor) -> torch.Tensor:
        return self.view_encoder(images)[:, self.factor_dim:]

    @torch.no_grad()
    def staged_waypoints(self, w_u: torch.Tensor, w_target: torch.Tensor, kind: str,
                         target: dict | None = None, row: int = 0) -> list[torch.Tensor]:
        """Latent waypoints (each (D,)) of a staged way from w_u to w_target (unlearning/paths.py): the categories a
        viewer sees switch whole, all at once (``categories_first``/``_last``), a group at a time
        (``categories_one_by_one``) or only the hair style (``hair_first``). A waypoint: the mapping of a hybrid
        factor vector plus the person's residual (w_u - mapping(their factors)), fading with the factor distance
        covered. Factors: ``identity_factors``, or the pool face's for a substitute (``target``, row ``row``)."""
        from ..faceworld.factors import CATEGORY_GROUPS, category_slices, shown_category

        if not self.factor_dim:
            raise ValueError("staged paths switch face-world factors: they need a factor-conditioned generator")
        if kind not in ("categories_first", "categories_one_by_one", "categories_last", "hair_first"):
            raise ValueError(f"unknown staged path {kind!r}")
        e_u = self.identity_factors(w_u)
        if target and target.get("pool_index") is not None and target.get("kind") in ("substitute", "proximity") \
                and "substitute_skipped" not in target:
            pool = self.generator.sample_embeddings(target["pool_size"],
                                                    torch.Generator().manual_seed(target["pool_seed"]))
            e_s = pool[target["pool_index"][row]]
        else:
            e_s = self.identity_factors(w_target)
        sl = category_slices()
        differ = [g for g in CATEGORY_GROUPS if shown_category(e_u, g[0]) != shown_category(e_s, g[0])
                  and (kind != "hair_first" or g[0] == "hair_style")]
        if kind != "categories_one_by_one":
            differ = [tuple(name for g in differ for name in g)] if differ else []
        hybrids, e = [], (e_s if kind == "categories_last" else e_u).clone()
        for g in differ:  # first: e_u with the target's categories; last: e_s with the person's
            for name in g:
                e[sl[name]] = (e_u if kind == "categories_last" else e_s)[sl[name]]
            hybrids.append(e.clone())
        residual = w_u - self.generator.map_identity(e_u[None])[0]
        total = float((e_s - e_u).norm()) or 1.0
        points = [w_u]
        for h in hybrids:
            fade = max(1 - float((h - e_u).norm()) / total, 0.0)
            points.append(self.generator.map_identity(h[None])[0] + fade * residual)
        return [*points, w_target]

    def identity_factors(self, w: torch.Tensor, steps: int = 150) -> torch.Tensor:
        """The face-world factor vector (D_f,) whose mapping comes nearest the latent w (D,), with one-hot
        categories: every combination of categories is tried, the rest fitted by gradient descent from the face
        encoder's reading of the frontal render. The encoder alone misreads some categories at 64 px (a faint
        beard, two frame shapes), and a way built on a misread category would switch the wrong thing."""
        from ..faceworld.factors import CATEGORY_SIZES, category_slices

        with torch.no_grad():
            start = self.view_encoder(self.render(w[None], self.canonical_views(1)))[0, :self.factor_dim]
        sl = category_slices()
        parts = [sl[name] for name in CATEGORY_SIZES]
        combos = list(itertools.product(*(range(p.stop - p.start) for p in parts)))
        fixed = torch.zeros(len(combos), self.factor_dim)
        free = torch.ones(self.factor_dim)
        for p in parts:
            free[p] = 0
        for c, combo in enumerate(combos):
            for p, k in zip(parts, combo, strict=True):
                fixed[c, p.start + k] = 1
        x = (start * free).repeat(len(combos), 1).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.05)
        with torch.enable_grad():
            for _ in range(steps):
                err = (self.generator.map_identity(x * free + fixed) - w).square().mean(1)
                opt.zero_grad()
                err.sum().backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(-1, 1)  # every factor's range: past it the mapping was never trained
        with torch.no_grad():
            e = x * free + fixed
            best = int((self.generator.map_identity(e) - w).square().mean(1).argmin())
        return e[best].detach()

    def face_crop(self):
        """Uploads are aligned to the face world's framing at 64 px (see ``legato_core.faces``)."""
        from ..faces import FaceCrop

        return FaceCrop.faceworld(64)

    def invert(self, images: torch.Tensor, refine_steps: int | None = None,
               init: tuple[torch.Tensor, torch.Tensor] | None = None,
               on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> (identity latent, view) whose render reproduces them.

        ``init``: start the refinement from this (latent, view) instead of the encoder's guess (an attacker's warm
        start); ``on_step(step, w, v)`` sees every refinement step (the attacks check the judge along the way)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        if len(images) == 1:  # an upload: tiny ops, where a second thread costs more than it gives
            with single_threaded():
                return self._invert(images, refine_steps, init, on_step)
        return self._invert(images, refine_steps, init, on_step)

    def _invert(self, images: torch.Tensor, refine_steps: int | None, init=None, on_step=None):
        if images.shape[-2:] != (64, 64):
            images = F.interpolate(images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            if init is None:
                w, v = self.encode_identity(images), self.encode_view(images)
            else:
                w, v = (x.detach().clone() for x in init)
        steps = self.refine_steps if refine_steps is None else refine_steps
        if steps <= 0:
            return w, v
        w, v = w.clone().requires_grad_(True), v.clone().requires_grad_(True)
        opt = torch.optim.Adam([w, v], lr=self.refine_lr)
        n, k = len(images), self.identity_views if self.identity_weight > 0 else 0
        pc = self._perceptual
        uses_arcface = bool(self.perceptual_weight or k)  # pixels alone need no arcface pass
        if uses_arcface:
            with torch.no_grad():  # the image's features and embedding are fixed: computed once
                f_img = pc.features(images)
                e = pc.embedding(f_img)
        other_views = random_view_vectors(n * k, torch.Generator().manual_seed(7))
        for step in range(steps):
            # one batch: the image's own view first, then k other views of the same latent; one arcface pass
            # gives the perceptual features (own view) and the identity embeddings (all views)
            out = self.generator.synthesize(w.repeat(k + 1, 1), torch.cat([v, other_views]))
            f_out = pc.features(out) if uses_arcface else None
            loss = (out[:n] - images).abs().mean()
            if self.perceptual_weight:
                loss = loss + self.perceptual_weight * pc.distance([f[:n] for f in f_out], f_img).mean()
            if k:
                loss = loss + self.identity_weight * (1 - (pc.embedding(f_out) * e.repeat(k + 1, 1)).sum(1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(step, w.detach(), v.detach().clamp(-1.05, 1.05))
        return w.detach(), v.detach().clamp(-1.05, 1.05)


def _inversion_whitening(path: Path, backend: EmbeddedFaceBackend) -> torch.Tensor | None:
    """The generator folder's inversion scatter whitening, if it was made for these very weights."""
    if not path.is_file():
        return None
    from ..adapters.adapter import read_safetensors

    tensors, meta = read_safetensors(path, "inversion scatter")
    return tensors["whitening"].float() if meta.get("generator_hash") == backend.weight_hash() else None
