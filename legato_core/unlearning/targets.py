"""What the forgotten identity becomes: average, extrapolated (GUIDE) or proximity (PIU-style) targets."""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, fields

import torch

from ..adapters import active
from ..adapters.scope import measured
from ..backends.base import renders_fast
from ..metrics import central_change, manifold_psnr, sharpness
from .paths import PACES, PATHS

TARGETS = ("average", "extrapolated", "proximity", "substitute")


@dataclass
class TargetConfig:
    """Where the person is carried to. The measurement behind each default is in docs/engine.md, "Defaults and
    how they were chosen"."""

    # a prior face is one the generator draws, so the forgotten person becomes someone else, not a blend (an
    # extrapolated target lies near the average latent, where the prior rarely draws)
    kind: str = "substitute"
    # GUIDE's d, as a multiple of the typical |w - w_avg| of this latent space, where no stop is searched for
    # (stop_similarity None, or a backend that cannot render fast); a full radius reaches an "opposite" face
    distance_scale: float = 0.5
    # "unrelated" for the loss network (arcface, never the judge; mean cosine over stop_views canonical views):
    # substitute: the most a pool face may look like the person; extrapolated: where the search along the line
    # from w_u stops (past it the judge's similarity rises again for some people). None: no search
    stop_similarity: float | None = -0.1
    search_scale: float = 1.0
    # extrapolated: where the loss network never reaches stop_similarity within search_scale radii, search on
    # along the same line up to this many radii (search_scale or less: no extension)
    search_extend: float = 2.0
    # the target must also change the centre of the person's face (mean absolute change over the central half,
    # in the stop_views views; image units) by at least this much: the loss network can call a face someone else
    # while its centre is nearly the person's, and then forgetting hardly shows where a viewer looks
    min_central_change: float = 0.15
    stop_views: int = 4
    stop_points: int = 33  # candidate points on the line from w_u to the full-distance target
    pool_size: int = 256  # proximity, substitute: reference identities drawn from the prior
    pool_seed: int = 7
    margin: float = 0.05  # proximity: stay this far below the arcface threshold
    # substitute: of the qualifying pool faces, the ``path_candidates`` nearest are compared by how well the
    # straight latent path to them re-renders through the base model at ``path_positions`` (the lowest PSNR).
    # 0 or 1: the nearest. 4 at 38 dB: the mid-dial stays a face the model draws for 32/40 validation people
    # against 21/40 (docs/ideal_dials); the positions are where the calibrated dial's u = 1/4 ... 7/8 fall
    path_candidates: int = 4
    path_positions: tuple[float, ...] = (0.2, 0.35, 0.5, 0.7)
    # with path_candidates: take the nearest whose path re-renders at >= this many dB and keeps this share of the
    # sharpness of the path's two ends (scored in order, so most people cost one candidate), else the best of
    # them. None: score them all by PSNR and take the best
    path_min_db: float | None = 38.0
    path_min_sharpness: float = 0.9
    # the way there, for the reference-path term (weights.reference_path; unlearning/paths.py): "straight", or a
    # staged path that switches the face's categories first, one by one, or last (face-world backends)
    path: str = "straight"
    path_pace: str = "arc"  # equal arc length per solver step, or "segments": each waypoint-to-waypoint an equal share

    def __post_init__(self):
        if self.kind not in TARGETS:
            raise ValueError(f"unknown target {self.kind!r}; choose from {TARGETS}")
        if self.stop_similarity is not None and not -1 <= self.stop_similarity < 1:
            raise ValueError(f"stop_similarity must be a cosine in [-1, 1), got {self.stop_similarity}")
        if self.path_candidates < 0 or not all(0 < p < 1 for p in self.path_positions):
            raise ValueError("path_candidates must be >= 0 and path_positions fractions strictly inside (0, 1)")
        self.path_positions = tuple(self.path_positions)
        if self.path not in PATHS:
            raise ValueError(f"unknown target path {self.path!r}; choose from {PATHS}")
        if self.path_pace not in PACES:
            raise ValueError(f"unknown path pace {self.path_pace!r}; choose from {PACES}")
        if self.min_central_change < 0:
            raise ValueError(f"min_central_change is a mean absolute pixel change, >= 0; got {self.min_central_change}")


@torch.no_grad()
def typical_radius(backend, n: int = 1024, metric: torch.Tensor | None = None) -> float:
    """Median distance of prior latents from w_avg: the natural unit for GUIDE's d in this latent space (with
    ``metric`` (D, D), the distance after that linear map, as a scope with that metric measures it)."""
    d = backend.sample_latents(n, torch.Generator().manual_seed(1)) - backend.w_avg
    return float(measured(d, metric).norm(dim=1).median())


@torch.no_grad()
def make_target(backend, w_u: torch.Tensor, cfg: TargetConfig, distinct: bool = False) -> tuple[torch.Tensor, dict]:
    """Target latent(s) for latent(s) w_u (B, D); returns (w_target, description). ``distinct`` (substitute
    targets, several people forgotten in one run): every row gets its own pool face, none of them a row of w_u."""
    w_avg = backend.w_avg.expand_as(w_u)
    desc = asdict(cfg)
    if cfg.kind == "average":
        return w_avg.clone(), desc
    if cfg.kind == "extrapolated":
        search = cfg.stop_similarity is not None and renders_fast(backend)
        d = (cfg.search_scale if search else cfg.distance_scale) * typical_radius(backend)
        direction = w_u - w_avg
        w_target = w_avg - d * direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-8)
        desc["distance"] = d
        if not search:  # the search renders stop_points x stop_views images per latent: too slow on some backends
            desc["stop_fraction"] = None
            return w_target, desc
        frac = stop_fraction(backend, w_u, w_target, cfg)
        stopped = w_u + frac[:, None] * (w_target - w_u)
        never = (frac >= 1).nonzero().flatten()
        if cfg.search_extend > cfg.search_scale and len(never):  # the same line, on past the full distance
            far_d = d * cfg.search_extend / cfg.search_scale
            unit = direction[never] / direction[never].norm(dim=1, keepdim=True).clamp(min=1e-8)
            far = w_avg[never] - far_d * unit
            f_far = stop_fraction(backend, w_u[never], far, cfg)
            stopped[never] = w_u[never] + f_far[:, None] * (far - w_u[never])
            near = direction[never].norm(dim=1)  # |w_u - w_avg|: the line runs w_u -> w_avg -> beyond
            frac[never] = f_far * (near + far_d) / (near + d)
        desc["stop_fraction"] = frac.tolist()  # of the way from w_u to the target at distance d (> 1: past it)
        return stopped, desc
    if cfg.kind == "substitute":
        if renders_fast(backend):
            return substitute_target(backend, w_u, cfg, desc, distinct)
        # the pool search renders pool_size x stop_views images and needs the loss network: too slow (or
        # impossible) on a backend whose render is a sampling loop, which keeps GUIDE's fixed half-radius target
        desc["substitute_skipped"] = "backend renders slowly: extrapolated target at distance_scale"
        return make_target(backend, w_u, TargetConfig(**{**asdict(cfg), "kind": "extrapolated"}))[0], desc
    # proximity: nearest reference identity that the training identity network still calls someone else
    arcface = backend.loss_identity_model()
    view = backend.canonical_views(1).expand(len(w_u), -1)
    pool = backend.sample_latents(cfg.pool_size, torch.Generator().manual_seed(cfg.pool_seed))
    e_pool = arcface.embed(backend.render(pool, backend.canonical_views(1).expand(len(pool), -1)))
    e_u = arcface.embed(backend.render(w_u, view))
    sim = e_u @ e_pool.T
    allowed = sim < arcface.threshold - cfg.margin
    masked = torch.where(allowed, sim, torch.full_like(sim, -2.0))
    idx = masked.argmax(dim=1)
    none = ~allowed.any(dim=1)
    idx[none] = sim[none].argmin(dim=1)
    desc["pool_similarity"] = sim.gather(1, idx[:, None]).squeeze(1).tolist()
    desc["pool_index"] = idx.tolist()
    return pool[idx].clone(), desc


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backend -> {pool key: rendered pool}


@torch.no_grad()
def _rendered_pool(backend, cfg: TargetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The candidate pool's latents, renders (P, views, 3, H, W) and loss-network embeddings (P, views, E), made
    once per backend and pool: every forget run on a backend searches the same seeded pool (6-7 s of each run on
    2 cores, where many people are forgotten one after another). Kept for the backend's life, one pool at a time."""
    k = cfg.stop_views
    key = (backend.weight_hash(), cfg.pool_size, cfg.pool_seed, k)
    cache = _POOLS.setdefault(backend, {})
    if key not in cache:
        views = backend.canonical_views(k)
        pool = backend.sample_latents(cfg.pool_size, torch.Generator().manual_seed(cfg.pool_seed))
        with active(backend, []):  # the base model's faces, whatever the caller has active
            img = torch.cat([backend.render(c.repeat_interleave(k, 0), views.repeat(len(c), 1))
                             for c in pool.split(64)])
        e_pool = backend.loss_identity_model().embed(img).view(len(pool), k, -1)
        cache.clear()
        cache[key] = (pool, img.view(len(pool), k, *img.shape[1:]), e_pool)
    return cache[key]


@torch.no_grad()
def substitute_target(backend, w_u: torch.Tensor, cfg: TargetConfig, desc: dict,
                      distinct: bool = False) -> tuple[torch.Tensor, dict]:
    """Per row of w_u, a face the generator draws from its prior: of ``pool_size`` prior latents, the nearest to
    the person among those the loss network calls unrelated (<= ``stop_similarity``) and whose face centre
    differs by >= ``min_central_change`` (else the least similar); of the ``path_candidates`` nearest, the first
    whose straight path stays a crisp face the model draws (else the best). Why a prior latent: it is a plausible
    other person by construction, where adapters that reach for an extrapolated target land between two faces."""
    views = backend.canonical_views(cfg.stop_views)
    pool, sim, centre = _pool_reading(backend, w_u, cfg)
    picks, sims, path = [], [], []
    taken = torch.zeros(len(pool), dtype=torch.bool)
    if distinct:  # a pool face that is one of the people being forgotten is nobody's substitute
        taken |= torch.cdist(pool, w_u).min(1).values < 1e-4
    for r in range(len(w_u)):
        near = _nearest_qualifying(pool, w_u[r], sim[r], centre[r], cfg, taken)[:max(1, cfg.path_candidates)]
        if not len(near):
            i, path_db = int(sim[r].argmin()), None
        else:
            i, path_db = int(near[0]), None
            if len(near) > 1:
                scores = []  # (PSNR, sharpness kept) of each path scored
                for j in near.tolist():
                    scores.append(path_quality(backend, w_u[r], pool[j], cfg.path_positions, views))
                    db, sharp = scores[-1]
                    if cfg.path_min_db is not None and db >= cfg.path_min_db and sharp >= cfg.path_min_sharpness:
                        break
                best = max(range(len(scores)), key=lambda c: (scores[c][1] >= cfg.path_min_sharpness
                                                              or cfg.path_min_db is None, scores[c][0]))
                i, path_db = int(near[best]), round(scores[best][0], 2)
        picks.append(i)
        taken[i] = distinct
        sims.append(float(sim[r, i]))
        path.append(path_db)
    desc["pool_index"], desc["pool_similarity"], desc["path_db"] = picks, sims, path
    return pool[picks].clone(), desc


@torch.no_grad()
def qualifying_substitutes(backend, w_u: torch.Tensor, cfg: TargetConfig
                           ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(the pool's latents, the loss network's mean cosine of each row of w_u to each pool face (B, P), per row
    the pool faces that qualify as its substitute, nearest first): what ``substitute_target`` chooses from."""
    pool, sim, centre = _pool_reading(backend, w_u, cfg)
    none = torch.zeros(len(pool), dtype=torch.bool)
    return pool, sim, [_nearest_qualifying(pool, w_u[r], sim[r], centre[r], cfg, none) for r in range(len(w_u))]


def _pool_reading(backend, w_u: torch.Tensor, cfg: TargetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pool's latents and, per row of w_u, the loss network's mean cosine to each pool face and how much each
    changes the person's face centre (B, P each), in ``cfg.stop_views`` canonical views."""
    k = cfg.stop_views
    pool, pool_img, e_pool = _rendered_pool(backend, cfg)
    person = backend.render(w_u.repeat_interleave(k, 0), backend.canonical_views(k).repeat(len(w_u), 1))
    e_u = backend.loss_identity_model().embed(person).view(len(w_u), k, -1)
    person = person.view(len(w_u), k, *person.shape[1:])
    sim, centre = [], []
    for r in range(len(w_u)):
        sim.append(torch.einsum("vd,pvd->p", e_u[r], e_pool) / k)  # mean cosine in the same views
        centre.append(central_change(person[r].expand(len(pool), -1, -1, -1, -1).flatten(0, 1),
                                     pool_img.flatten(0, 1)).view(len(pool), k).mean(1))
    return pool, torch.stack(sim), torch.stack(centre)


def _nearest_qualifying(pool: torch.Tensor, w: torch.Tensor, sim: torch.Tensor, centre: torch.Tensor,
                        cfg: TargetConfig, excluded: torch.Tensor) -> torch.Tensor:
    """Indices of the pool faces the loss network calls unrelated to the person w (D,) and whose face centre
    changed enough, nearest first (``excluded`` faces left out)."""
    ceiling = -0.1 if cfg.stop_similarity is None else cfg.stop_similarity
    ok = (sim <= ceiling) & (centre >= cfg.min_central_change) & ~excluded
    order = torch.where(ok, (pool - w).norm(dim=1), torch.full((len(pool),), float("inf"))).argsort()
    return order[ok[order]]


@torch.no_grad()
def recorded_target(backend, w_u: torch.Tensor, description: dict) -> torch.Tensor:
    """The target latent an adapter was trained toward, from its description's ``target`` entry and the person's
    latent w_u (1, D): the pool face it names (substitute, proximity), else the same search run again (make_target
    is deterministic). What re-measuring a saved adapter's dial needs without retraining it."""
    rec = dict(description.get("target") or {})
    if rec.get("pool_index") is not None and rec.get("kind") in ("substitute", "proximity") \
            and "substitute_skipped" not in rec:
        pool = backend.sample_latents(rec["pool_size"], torch.Generator().manual_seed(rec["pool_seed"]))
        return pool[rec["pool_index"]].clone()
    known = {f.name for f in fields(TargetConfig)}
    return make_target(backend, w_u, TargetConfig(**{k: v for k, v in rec.items() if k in known}))[0]


def path_quality(backend, w_a: torch.Tensor, w_b: torch.Tensor, positions, views: torch.Tensor
                 ) -> tuple[float, float]:
    """How the straight latent path from w_a to w_b (D,) renders at ``positions`` in ``views``: the lowest mean
    on-manifold PSNR (``metrics.manifold_psnr``: is every point a face the model draws?) and the lowest mean
    central sharpness over the smaller of the two ends' (a blend of two faces can be a smear)."""
    lat = torch.stack([w_a + p * (w_b - w_a) for p in [0.0, 1.0, *positions]]).repeat_interleave(len(views), 0)
    with torch.no_grad():
        images = backend.render(lat, views.repeat(len(positions) + 2, 1))
    images = images.view(len(positions) + 2, len(views), *images.shape[1:])
    ends = torch.minimum(sharpness(images[0]), sharpness(images[1]))
    between = images[2:].flatten(0, 1)
    db = manifold_psnr(backend, between).view(len(positions), len(views)).mean(1).min()
    sharp = (sharpness(between).view(len(positions), len(views)) / ends).mean(1).min()
    return float(db), float(sharp)


@torch.no_grad()
def stop_fraction(backend, w_u: torch.Tensor, w_far: torch.Tensor, cfg: TargetConfig) -> torch.Tensor:
    """Per row, the first fraction f of the way from w_u to w_far where the loss network's mean cosine to the
    person has dropped to ``cfg.stop_similarity`` and the face's centre has changed by ``cfg.min_central_change``
    (each crossing linear between candidate points; the later of the two; 1 if either never happens) -> (B,)."""
    arcface = backend.loss_identity_model()
    b, p, k = len(w_u), cfg.stop_points, cfg.stop_views
    fr = torch.linspace(0, 1, p, dtype=w_u.dtype, device=w_u.device)
    line = (w_u[:, None] + fr[None, :, None] * (w_far - w_u)[:, None]).reshape(b * p, -1)  # (B*P, D)
    views = backend.canonical_views(k)
    emb, images = [], []
    for chunk in line.split(32):
        img = backend.render(chunk.repeat_interleave(k, 0), views.repeat(len(chunk), 1))
        emb.append(arcface.embed(img))
        images.append(img)
    emb = torch.cat(emb).view(b, p, k, -1)
    sim = (emb * emb[:, :1]).sum(-1).mean(-1)  # (B, P): cosine to the person in the same view, at fraction 0
    images = torch.cat(images).view(b, p, k, *images[0].shape[1:])
    person = images[:, :1].expand_as(images)
    centre = central_change(person.flatten(0, 2), images.flatten(0, 2)).view(b, p, k).mean(-1)  # (B, P)
    out = torch.ones(b, dtype=w_u.dtype, device=w_u.device)
    for r in range(b):
        f_sim = _first_crossing(fr, -sim[r], -cfg.stop_similarity)
        f_px = _first_crossing(fr, centre[r], cfg.min_central_change)
        if f_sim is not None and f_px is not None:
            out[r] = max(f_sim, f_px)
    return out


def _first_crossing(fr: torch.Tensor, values: torch.Tensor, level: float) -> float | None:
    """The first fraction where ``values`` (rising from fraction 0) reach ``level``, linear between points."""
    above = (values >= level).nonzero()
    if not len(above):
        return None
    i = int(above[0])
    if i == 0:
        return 0.0
    v0, v1 = float(values[i - 1]), float(values[i])
    return float(fr[i - 1] + (fr[i] - fr[i - 1]) * (level - v0) / max(v1 - v0, 1e-8))
