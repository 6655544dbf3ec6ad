"""Training an ODE adapter so a frozen generator forgets one identity (LEGATO), as a background job.

``forget(backend, image_or_latent, config)`` is the one public entry point; ``ForgetJob`` runs the same
thing in a thread with progress events and cancellation. Each step: random views; the local loss pulls the
adapted render of the target latent onto the frozen render of the target's replacement, the adjacency loss
does the same a random step away from it, the preservation loss keeps random identities unchanged, and the
trajectory-consistency term penalises the kinetic energy of the ODE path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch

from ..adapters import ODEAdapter, ODEConfig, active
from ..adapters.ode import time_grid
from ..adapters.scope import CARRIES, Scope
from ..backends.base import renders_fast
from .anchors import view_anchors
from .calibration import CalibrationConfig, calibrate_dial
from .objectives import LossWeights, trajectory_consistency
from .paths import path_pinning, reference_displacements
from .robust import RobustConfig, make_gate
from .step_objectives import make_objective
from .targets import TargetConfig, make_target, typical_radius

SCOPE_METRICS = ("latent", "inversion_scatter")


@dataclass
class ScopeConfig:
    """An adapter's scope (adapters/scope.py): full strength within ``inner`` of the person's latents (the upload
    and its view anchors), none beyond ``outer``, in typical radii of the prior as the scope's metric measures
    them. The default measures through the generator's inversion scatter and carries every latent in scope along
    the person's own path: on 10 validation people the other photos of all 10 are forgotten (the field, in plain
    latent distance at 0.75 / 1.0: 8 of 10), and ten composed adapters change no one else (docs/many.md)."""

    inner: float = 0.6
    outer: float = 0.72
    # "parallel": a latent in scope moves by the person's own displacement (their other photos go where they go);
    # "field": the field at the latent, weighted (it fades a little way off the person's latents)
    carry: str = "parallel"
    # "inversion_scatter": distance through the backend's whitening of where a person's other photos invert
    # (backends without one measure plain distance, and the adapter's description says so); "latent": plain
    metric: str = "inversion_scatter"

    def __post_init__(self):
        if not 0 <= self.inner < self.outer:
            raise ValueError(f"scope radii need 0 <= inner < outer, got {self.inner}, {self.outer}")
        if self.carry not in CARRIES:
            raise ValueError(f"scope carry is one of {CARRIES}, got {self.carry!r}")
        if self.metric not in SCOPE_METRICS:
            raise ValueError(f"scope metric is one of {SCOPE_METRICS}, got {self.metric!r}")


@dataclass
class ForgetConfig:
    """Defaults: the LEGATO reference where it transfers; where this small generator differs, the value was
    chosen on validation ids (100,000+). The measurement behind each is in docs/engine.md, "Defaults and how they
    were chosen"."""

    steps: int = 250  # reference 1000 at lr 1e-4; 250 at 2.5e-3 with pixel L1 weight 3 moves the target far enough
    lr: float = 2.5e-3
    lr_schedule: str = "constant"  # or "cosine": decay to 0 over the run (a cleaner end point in few steps)
    seed: int = 0
    local_views: int = 2
    # the person's other photos invert 0.6-0.7 radii from the upload: the field must carry that neighbourhood
    adjacency_samples: int = 4
    preservation_samples: int = 6  # reference 2; 6 with weight 6 lifts retention p5 on this generator
    # how many of the preservation latents are drawn *between* the target and a random identity, beyond the
    # adjacency radius (w_u + lam (w_r - w_u), lam ~ U(0.5, 1)): the people most at risk of being forgotten too
    preservation_near: int = 0
    adjacency_radius: float = 1.5  # alpha ~ U(0, r * typical |w - w_avg|): GUIDE's U(0, 15) rescaled
    # "prior": GUIDE's offsets, towards random identities (at a large radius they scope those people, whom the
    # preservation loss holds in place); "isotropic": random directions of the latent space
    adjacency_directions: str = "prior"
    # of the adjacency samples, this many point in random directions instead, at most ``isotropic_radius``
    # typical radii away (an option, off: it did not carry the other photos along better)
    adjacency_isotropic: int = 0
    isotropic_radius: float = 0.75
    # re-inverted renders of the person in this many other views join w_u as forget anchors, each moved to the
    # person's substitute by its own offset (anchors.py); backends that render slowly skip them
    view_anchors: int = 8
    trajectory_sites: str | list[str] = "all"
    sites: list[str] | None = None  # None: the backend's forget_sites
    target: TargetConfig = field(default_factory=TargetConfig)
    # reference hidden width 256 is for 512-channel EG3D blocks; 64 keeps adapters < 2 % of this generator
    ode: ODEConfig = field(default_factory=lambda: ODEConfig(hidden=64))
    # preservation 9 and its identity term 0.6 (the reference has none) keep everyone else; trajectory 100 makes
    # the latent's path even and straight (1 changed nothing measurable, 1000 no longer scopes the target)
    weights: LossWeights = field(default_factory=lambda: LossWeights(preservation=9.0, preservation_identity=0.6,
                                                                     pixel_l1=3.0, trajectory=100.0))

    # after training, measure the person along t (loss network and pixels, never the judge) and store the slider
    # map u -> t in the adapter (calibration.py); None, or a backend that cannot render fast: the raw knob t = u T
    calibration: CalibrationConfig | None = field(default_factory=CalibrationConfig)
    # after training, limit latent fields to a ball around the person's latents, so that adapters of many people
    # compose without moving anyone else (None: the field acts everywhere, as before session 18)
    scope: ScopeConfig | None = field(default_factory=ScopeConfig)
    # robust mode (off by default): after training, hold every latent the base model draws as the person
    # (adapters/gate.py), so that re-inverting their photo finds the substitute, not the person
    robust: RobustConfig | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def sites_on(self, backend) -> list[str]:
        """The adapter sites a run with this config trains on ``backend``: ``sites``, else its forget_sites."""
        return list(self.sites or backend.forget_sites)

    def merged(self, overrides: dict) -> ForgetConfig:
        """A copy with ``overrides`` (a partial config dict; nested dicts for target, ode, weights, calibration)
        laid over this config; an unknown field is a ValueError that names it."""
        def merge(base: dict, over: dict, where: str) -> dict:
            out = dict(base)
            for key, value in over.items():
                if key not in base:
                    raise ValueError(f"unknown ForgetConfig field {where + key!r}")
                out[key] = merge(base[key], value, f"{where}{key}.") if isinstance(base[key], dict) and \
                    isinstance(value, dict) else value
            return out

        return ForgetConfig.from_dict(merge(self.to_dict(), overrides, ""))

    @classmethod
    def from_dict(cls, d: dict) -> ForgetConfig:
        d = dict(d)
        d["target"] = TargetConfig(**d.get("target", {}))
        d["ode"] = ODEConfig(**d.get("ode", {}))
        d["weights"] = LossWeights(**d.get("weights", {}))
        if d.get("calibration") is not None:
            d["calibration"] = CalibrationConfig(**d["calibration"])
        if d.get("scope") is not None:
            d["scope"] = ScopeConfig(**d["scope"])
        if d.get("robust") is not None:
            d["robust"] = RobustConfig(**d["robust"])
        return cls(**d)


@dataclass
class ProgressEvent:
    step: int
    steps: int
    losses: dict[str, float]
    elapsed: float
    eta: float
    adapter: ODEAdapter | None = None  # the adapter being trained, as it stands after this step


class Cancelled(Exception):  # noqa: N818 - reads better at call sites than CancelledError
    """Raised inside a forget run when its job is cancelled; nothing is attached or saved."""


@dataclass
class ForgetResult:
    adapter: ODEAdapter
    latent: torch.Tensor  # every latent trained as the person: the given ones, then any view anchors
    target_latent: torch.Tensor
    history: list[dict]
    seconds: float
    config: ForgetConfig


def resolve_latent(backend, image_or_latent: torch.Tensor) -> torch.Tensor:
    """Images (B,3,H,W) are inverted; latents (B,D) or (D,) pass through."""
    x = image_or_latent
    if x.dim() == 4:
        return backend.invert(x)[0]
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"expected an image batch (B,3,H,W) or latents (B,D), got shape {tuple(x.shape)}")
    return x.detach()


def train_adapter(backend, w_u: torch.Tensor, config: ForgetConfig,
                  on_progress: Callable[[ProgressEvent], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  target: tuple[torch.Tensor, dict] | None = None) -> ForgetResult:
    """Train an ODE adapter on ``backend`` (left unchanged: the adapter is only active inside each step).
    ``target``: (w_target, description) chosen beforehand (``make_target``), e.g. for several people at once."""
    t0 = time.time()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    sites = config.sites_on(backend)
    if config.robust is not None and not any(
            getattr(backend.adapter_sites[s], "adapter_kind", "conv") == "latent" for s in sites):
        raise ValueError(f"robust mode gates a latent site, and this run adapts none (sites: {sites})")
    w_target, target_desc = target if target is not None else make_target(backend, w_u, config.target)
    offsets, pinned_sites = None, []
    if config.weights.reference_path:
        offsets, pinned_sites = _reference_path(backend, sites, w_u, w_target, target_desc, config)
    if config.view_anchors and renders_fast(backend):
        # each anchor is the person seen through another photo: it goes where its photo's latent goes, moved by
        # the same offset (one substitute for the person, not one per anchor)
        anchors = view_anchors(backend, w_u, config.view_anchors, gen)
        rows = torch.arange(len(w_u)).repeat_interleave(config.view_anchors)
        w_target = torch.cat([w_target, w_target[rows] + anchors - w_u[rows]])
        w_u = torch.cat([w_u, anchors])
        if offsets is not None:  # an anchor takes its person's way, in parallel
            offsets = torch.cat([offsets, offsets[rows]])
    description = {"target": target_desc, "method": "legato", "steps": config.steps, "seed": config.seed}
    adapter = ODEAdapter.for_model(backend, sites, config.ode, description)
    traj_sites = sites if config.trajectory_sites == "all" else list(config.trajectory_sites)
    backend.prepare_adapter(adapter)  # device placement before the optimiser sees the parameters
    opt = torch.optim.Adam(adapter.parameters(), lr=config.lr)
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
             if config.lr_schedule == "cosine" else None)
    history: list[dict] = []
    t_end = config.ode.t_end
    objective = make_objective(backend, w_u, w_target, config, gen)  # the backend's own per-step losses
    try:
        for step in range(config.steps):
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled at step {step}")
            # forward and backward inside one activation block; backward on this thread, so a recomputed
            # forward (gradient checkpointing on a GPU) sees the same active adapter
            with active(backend, [(adapter, t_end)], record=True) as states, \
                    torch.autograd.set_multithreading_enabled(False):
                parts, k_l = objective.losses(adapter)
                traj = torch.stack([trajectory_consistency([s[:k_l] for s in states[name]])
                                    for name in traj_sites]).mean()
                total = parts["forget"] + parts["retain"] + config.weights.trajectory * traj
                if offsets is not None:
                    rows = objective.local_rows
                    parts["reference_path"] = torch.stack([
                        path_pinning([s[:k_l] for s in states[name]], states[name][0][:k_l], offsets[rows])
                        for name in pinned_sites]).mean()
                    total = total + config.weights.reference_path * parts["reference_path"]
                opt.zero_grad(set_to_none=True)
                total.backward()
            opt.step()
            if sched is not None:
                sched.step()
            rec = {"step": step + 1, "total": total.item(), "trajectory": traj.item(),
                   **{k: v.item() for k, v in parts.items() if k not in ("forget", "retain")}}
            history.append(rec)
            if on_progress is not None:
                el = time.time() - t0
                on_progress(ProgressEvent(step + 1, config.steps, rec, el, el / (step + 1) * (config.steps - step - 1),
                                          adapter))
    finally:
        del objective  # a run's frozen trajectories (GPU memory) go with it, finished or not
    for p in adapter.parameters():
        p.requires_grad_(False)
    if config.scope is not None and "latent" in adapter.site_kinds.values():
        adapter.set_scope(make_scope(backend, w_u, config.scope))
        adapter.description["scope_metric"] = "whitened" if adapter.scope.metric is not None else "latent"
    if config.calibration is not None and renders_fast(backend):
        calibration = config.calibration
        if config.robust is not None:  # the gate's pull completes at t_end: a robust dial runs the whole knob
            calibration = replace(calibration, end_at_floor=False)
        adapter.set_dial(calibrate_dial(backend, adapter, w_u[:1], calibration))
    if config.robust is not None:
        gate, info = make_gate(backend, w_u, config.robust)
        adapter.set_gate(gate)
        adapter.description["robust"] = info
    return ForgetResult(adapter, w_u, w_target, history, time.time() - t0, config)


def make_scope(backend, centres: torch.Tensor, config: ScopeConfig) -> Scope:
    """The scope ``config`` asks for around ``centres`` (the upload first), its radii in typical radii of the
    metric it measures with."""
    metric = getattr(backend, "inversion_whitening", None) if config.metric == "inversion_scatter" else None
    unit = typical_radius(backend, metric=metric)
    return Scope(centres, config.inner * unit, config.outer * unit, config.carry, metric)


def _reference_path(backend, sites: list[str], w_u: torch.Tensor, w_target: torch.Tensor, target_desc: dict,
                    config: ForgetConfig) -> tuple[torch.Tensor, list[str]]:
    """The reference-path term's offsets (B, K, D), one per solver state, and the latent sites it pins."""
    pinned = [s for s in sites if getattr(backend.adapter_sites[s], "adapter_kind", "conv") == "latent"]
    if not pinned or backend.objective != "image":
        raise ValueError("the reference path pins the solver states of a latent site under the image objective; "
                         f"this run adapts {sites} with objective {backend.objective!r} (set weights.reference_path=0)")
    if len(w_target) != len(w_u):
        raise ValueError("the reference path needs one target latent per person")
    if config.ode.method != "euler":
        raise ValueError("the reference path pins the states of the euler solver (ode.method='euler')")
    grid = time_grid(config.ode.t_end, config.ode.step_size)
    offsets = reference_displacements(backend, w_u, w_target, config.target.path, grid[1:] / grid[-1], target_desc,
                                      config.target.path_pace)
    return offsets, pinned


def forget(backend, image_or_latent: torch.Tensor, config: ForgetConfig | None = None,
           on_progress: Callable[[ProgressEvent], None] | None = None) -> ForgetResult:
    """Forget the identity in ``image_or_latent`` (an image batch or identity latents) on ``backend``."""
    config = config or ForgetConfig()
    return train_adapter(backend, resolve_latent(backend, image_or_latent), config, on_progress)


class ForgetJob:
    """A forget run in a background thread: progress events, cancellation, result or error.

    Torch threads: the job uses the process' intra-op pool; callers that run several jobs should cap it.
    """

    def __init__(self, backend, image_or_latent: torch.Tensor, config: ForgetConfig | None = None,
                 on_progress: Callable[[ProgressEvent], None] | None = None, lock: threading.Lock | None = None):
        self.backend, self.config = backend, config or ForgetConfig()
        self._input = image_or_latent
        self._user_cb = on_progress
        self._stop = threading.Event()
        self._lock = lock
        self.events: list[ProgressEvent] = []
        self.result: ForgetResult | None = None
        self.error: BaseException | None = None
        self.state = "pending"  # pending -> running -> done | cancelled | failed
        self.thread = threading.Thread(target=self._run, daemon=True, name="legato-forget")

    def start(self) -> ForgetJob:
        self.thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> ForgetResult:
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise RuntimeError(f"job {self.state}")
        return self.result

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    @property
    def latest(self) -> ProgressEvent | None:
        return self.events[-1] if self.events else None

    def _progress(self, ev: ProgressEvent) -> None:
        self.events.append(ev)
        if self._user_cb is not None:
            self._user_cb(ev)

    def _run(self) -> None:
        try:
            if self._lock is not None:
                self._lock.acquire()
            try:
                self.state = "running"
                w_u = resolve_latent(self.backend, self._input)
                self.result = train_adapter(self.backend, w_u, self.config, self._progress, self._stop.is_set)
                self.state = "done"
            finally:
                if self._lock is not None:
                    self._lock.release()
        except Cancelled:
            self.state = "cancelled"
        except BaseException as e:
            self.error = e
            self.state = "failed"
