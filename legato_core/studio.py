"""The demo's session layer, free of any UI toolkit: ``app.py`` is a thin gradio shell over it.

One :class:`Studio` per browser session holds the identities being forgotten. Each entry keeps its source
image, inverted latent and view, its background training task, its trained :class:`ODEAdapter`, its own
intensity ``t`` and its forgetting curve.

Isolation. The base generator is shared by every session, and adapters act through forward hooks on its
modules, so whatever is attached is seen by every forward pass. Three kinds of backend keep sessions apart:

- ``Resources.base``: the pristine backend. Nothing is ever attached to it, so any thread may use it at any
  time for base-model work (inversion, the cached t = 0 renders).
- ``Resources.render_backend``: the shared render backend. A session's adapters are attached to it only
  inside ``Resources.render_lock``, for one batched render, and detached before the lock is released.
- each training task gets its own private copy of the base (``copy.deepcopy``, ~40 ms, ~15 MB), so the
  engine can keep its adapter attached for the whole run without touching anybody else's renders.

Server-wide, a :class:`JobQueue` lets at most ``max_jobs`` tasks train at once (FIFO, with queue positions).
"""

from __future__ import annotations

import atexit
import copy
import functools
import itertools
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from . import faceworld
from .adapters import AdapterMismatchError, AdapterStack, ODEAdapter, ODEConfig
from .images import ImageError, open_image, to_pil, to_tensor
from .metrics import AdapterKnob, identity_similarity
from .ranges import DEVELOPMENT, EVALUATION_START
from .unlearning.engine import ForgetConfig, ForgetJob, ProgressEvent

EXAMPLE_IDS = tuple(range(DEVELOPMENT.start + 1, DEVELOPMENT.start + 9))  # 200_001 .. 200_008
RETAINED_IDS = tuple(range(DEVELOPMENT.start + 101, DEVELOPMENT.start + 105))  # 200_101 .. 200_104
MAX_IDENTITIES = 6
CURVE_POINTS = 9
MIN_FACE_ID = DEVELOPMENT.start  # below: ids the networks were trained or tuned on (legato_core.ranges)
MAX_FACE_ID = 999_999_999  # a sane maximum for the "add by id" box


class StudioError(ValueError):
    """A request the studio refuses; the message is meant for the person using the demo."""


class BusyError(StudioError):
    """This session already has a job running."""


# -- server-wide job queue -------------------------------------------------------------------------------------
class JobQueue:
    """At most ``max_jobs`` jobs hold a slot at once; the others wait in FIFO order and know their place.

    A counting semaphore with a visible, ordered waiting line (``threading.Semaphore`` wakes waiters in no
    particular order and cannot say where a waiter stands, hence a condition variable over a list).
    """

    def __init__(self, max_jobs: int = 1):
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running: list[object] = []
        self.max_jobs = max_jobs

    @property
    def max_jobs(self) -> int:
        return self._max_jobs

    @max_jobs.setter
    def max_jobs(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError(f"max_jobs must be >= 1, got {n}")
        with self._cond:
            self._max_jobs = int(n)
            self._cond.notify_all()

    def acquire(self, ticket: object, should_stop: Callable[[], bool] | None = None, poll: float = 0.1) -> bool:
        """Wait for a slot; False (and out of the line) if ``should_stop()`` turns true while waiting."""
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not (self._waiting[0] is ticket and len(self._running) < self._max_jobs):
                    if should_stop is not None and should_stop():
                        return False
                    self._cond.wait(poll)
                self._running.append(ticket)
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self, ticket: object) -> None:
        with self._cond:
            if ticket in self._running:
                self._running.remove(ticket)
            self._cond.notify_all()

    def position(self, ticket: object) -> int | None:
        """0: holds a slot; k >= 1: k-th in the waiting line; None: not in the queue."""
        with self._cond:
            if any(t is ticket for t in self._running):
                return 0
            for i, t in enumerate(self._waiting):
                if t is ticket:
                    return i + 1
            return None

    def wait_estimate(self, ticket: object) -> float | None:
        """Seconds until ``ticket`` should get a slot, from what the jobs ahead of it still need
        (``ticket.expected_remaining()``, None when unknown); None if not waiting or nothing is known yet."""
        with self._cond:
            if ticket not in self._waiting:
                return None
            ahead = self._waiting[: self._waiting.index(ticket)]
            running = list(self._running)
            free = self._max_jobs
        slots = []
        for t in running:
            left = getattr(t, "expected_remaining", lambda: None)()
            if left is None:
                return None
            slots.append(max(float(left), 0.0))
        slots = sorted(slots + [0.0] * max(free - len(slots), 0))[:max(free, 1)]
        for t in ahead:  # each job ahead takes the slot that frees first
            need = getattr(t, "expected_remaining", lambda: None)()
            if need is None:
                return None
            slots[0] += float(need)
            slots.sort()
        return slots[0]

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)


JOB_QUEUE = JobQueue(1)


class JobTimes:
    """Server-wide running averages of how long a training step and a forgetting-curve evaluation take, for the
    queue's time estimates (exponential moving averages; nothing until the first job has finished)."""

    def __init__(self, weight: float = 0.3):
        self._lock = threading.Lock()
        self.weight = weight
        self.step_seconds: float | None = None
        self.curve_seconds: float | None = None

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.weight) * old + self.weight * new

    def record(self, steps: int | None = None, train_seconds: float | None = None,
               curve_seconds: float | None = None) -> None:
        with self._lock:
            if steps and train_seconds is not None:
                self.step_seconds = self._mix(self.step_seconds, train_seconds / steps)
            if curve_seconds is not None:
                self.curve_seconds = self._mix(self.curve_seconds, curve_seconds)


JOB_TIMES = JobTimes()


def _duration(seconds: float) -> str:
    """42 -> "about 45 s", 130 -> "about 2 min 10 s", 3700 -> "about 62 min"."""
    if seconds < 60:
        return f"about {max(5, 5 * round(seconds / 5))} s"
    minutes, rest = divmod(int(10 * round(seconds / 10)), 60)
    return f"about {minutes} min" + (f" {rest} s" if rest and minutes < 10 else "")


# -- shared, process-wide resources ------------------------------------------------------------------------------
class Resources:
    """The backend(s), the render lock, the fixed retained identities and the lazily loaded judge.

    ``backend``: default the embedded face world. A diffusers backend (arc2face, ddpm) is judged by ``judge``, else
    by its own insightface pack; with neither there is no forgetting curve (the embedded judge only knows 64 x 64
    face-world faces). ``label``: the line the app shows to say which backend is live (default: from the backend).
    """

    def __init__(self, backend=None, retained_ids: tuple[int, ...] = RETAINED_IDS, curve_retained: int = 12,
                 seed: int = 20_260_104, judge=None, label: str | None = None):
        from .backends.registry import backend_kind, backend_label

        if backend is None:
            from .backends.embedded import EmbeddedFaceBackend

            backend = EmbeddedFaceBackend.from_pretrained()
        self.base = backend
        self.kind = backend_kind(backend)
        if judge is None and self.kind != "embedded":
            judge = getattr(backend, "identity", None)
        self.backend_label = label or backend_label(backend)
        self.base.weight_hash()  # computed once here; every copy inherits the cached value
        self._copy_lock = threading.Lock()
        self.render_backend = self.private_backend()
        self.render_lock = threading.Lock()
        gen = torch.Generator().manual_seed(seed)
        if self.face_world:
            # the grid's "retained" column: face-world people (development ids, never trained on), inverted by the
            # encoders alone (~20 ms; refining them hardly changes the render); the curve's retention is measured
            # on random identities from the generator's prior, as in legato_core.metrics
            self.retained_latents, self.retained_views = backend.invert(faceworld.render(list(retained_ids), 0),
                                                                        refine_steps=0)
        else:  # a photo model cannot invert 64 x 64 synthetic faces (insightface finds none): its own prior instead
            self.retained_latents = backend.sample_latents(len(retained_ids), gen)
            self.retained_views = backend.canonical_views(len(retained_ids))
        self.curve_retained_latents = backend.sample_latents(curve_retained, gen)
        self._retained_base: torch.Tensor | None = None
        self._judge = judge
        self._judge_lock = threading.Lock()

    @property
    def face_world(self) -> bool:
        """Whether face-world identities (the examples, "add by id") can be used: only the embedded backend."""
        return self.kind == "embedded"

    @property
    def image_size(self) -> int:
        """Square size uploads are cropped to: 64 (embedded), the checkpoint's (ddpm), 512 (arc2face)."""
        if self.kind == "ddpm":
            return int(self.base.size)
        return 512 if self.kind == "arc2face" else 64

    def private_backend(self):
        """A private copy of the pristine base (nothing is ever attached to ``base``, so copies are clean).

        Diffusers backends share their frozen tensors and insightface models with the base: only the module
        structure (where adapter hooks go) is copied, not gigabytes of weights per training task.
        """
        with self._copy_lock:
            if self.face_world:
                return copy.deepcopy(self.base)
            memo = {id(t): t for t in itertools.chain(self.base.parameters(), self.base.buffers())}
            for name in ("identity", "arcface_torch", "tokenizer"):
                shared = getattr(self.base, name, None)
                if shared is not None:
                    memo[id(shared)] = shared
            return copy.deepcopy(self.base, memo)

    @property
    def has_judge(self) -> bool:
        """Whether jobs measure a forgetting curve (without loading the judge)."""
        return self._judge is not None or self.face_world

    @property
    def judge(self):
        """The network that scores forgetting curves; None for a diffusers backend loaded without an insightface
        pack (no curve then)."""
        with self._judge_lock:
            if self._judge is None and self.face_world:
                from .identity.model import load_identity_model

                self._judge = load_identity_model("judge")
            return self._judge

    @property
    def retained_base(self) -> torch.Tensor:
        """uint8 renders of the retained identities by the base model."""
        if self._retained_base is None:
            with torch.inference_mode():
                self._retained_base = quantize(self.base.render(self.retained_latents, self.retained_views))
        return self._retained_base


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 (what the grid shows; caches hold these, 4x smaller than floats)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


_RESOURCES: Resources | None = None
_RESOURCES_LOCK = threading.Lock()


def get_resources() -> Resources:
    """The process-wide resources, loaded on first use (the embedded default unless ``set_resources`` ran)."""
    global _RESOURCES
    with _RESOURCES_LOCK:
        if _RESOURCES is None:
            _RESOURCES = Resources()
        return _RESOURCES


def set_resources(resources: Resources) -> Resources:
    """Install ``resources`` (e.g. built on a backend chosen by the app's flags) as the process-wide ones; sessions
    created afterwards use them."""
    global _RESOURCES
    with _RESOURCES_LOCK:
        _RESOURCES = resources
        return resources


# -- forgetting curve ---------------------------------------------------------------------------------------------
def _base_embeddings(backend, judge, latents: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    lat = latents.repeat_interleave(len(views), 0)  # same pairing as metrics.identity_similarity
    vw = views.repeat(len(latents), 1)
    with torch.no_grad():
        return judge.embed(backend.render(lat, vw))


def forgetting_curve(backend, adapter: ODEAdapter, latent: torch.Tensor | None, judge, retained: torch.Tensor,
                     n_views: int = 6, points: int = CURVE_POINTS,
                     should_stop: Callable[[], bool] | None = None) -> dict:
    """ID_target(t) and retention(t) at ``points`` t's in [0, t_max], scored by the judge only.

    ``backend`` must be private to the caller: the adapter is attached to it for the duration.
    """
    ts = [round(float(t), 4) for t in np.linspace(0.0, adapter.config.t_max, points)]
    knob = AdapterKnob(backend, [adapter])
    views = backend.canonical_views(n_views)
    frontal = backend.canonical_views(1)
    out = {"t": ts, "id_target": [], "retention": [], "retention_min": [], "threshold": float(judge.threshold),
           "views": n_views, "retained": len(retained)}
    base_t = _base_embeddings(backend, judge, latent, views) if latent is not None else None  # before attaching
    base_r = _base_embeddings(backend, judge, retained, frontal)
    adapter.attach(backend)
    try:
        for t in ts:
            if should_stop is not None and should_stop():
                raise InterruptedError("cancelled while computing the forgetting curve")
            if latent is not None:
                out["id_target"].append(float(identity_similarity(knob, latent, views, t, judge, base_t).mean()))
            ret = identity_similarity(knob, retained, frontal, t, judge, base_r)
            out["retention"].append(float(ret.mean()))
            out["retention_min"].append(float(ret.min()))
    finally:
        adapter.detach()
    if latent is None:
        out["id_target"] = None
    return out


# -- one forgotten identity -------------------------------------------------------------------------------------
@dataclass
class Entry:
    key: str
    name: str
    source: Image.Image  # what the person gave us, cropped to a square (64x64)
    inversion: Image.Image  # the base model's render of the inverted latent and view
    latent: torch.Tensor | None  # (1, D); None for an imported adapter that carries no target
    view: torch.Tensor | None  # (1, V)
    grid_views: torch.Tensor | None  # (3, V): the inverted view and two fixed ones
    adapter: ODEAdapter | None = None
    t: float = 0.0
    curve: dict | None = None
    seconds: float | None = None  # training wall time
    steps: int | None = None
    notes: list[str] = field(default_factory=list)  # what the person should be told about their file
    _base_target: torch.Tensor | None = field(default=None, repr=False)  # uint8 t = 0 renders of grid_views
    _export: tuple | None = field(default=None, repr=False)  # (adapter, path) of the session's exported copy

    @property
    def ready(self) -> bool:
        return self.adapter is not None

    @property
    def t_max(self) -> float:
        return float(self.adapter.config.t_max if self.adapter is not None else ODEConfig().t_max)

    @property
    def label(self) -> str:
        suffix = " (forgotten)" if self.ready else ""
        return f"{self.key} · {self.name}{suffix}"


# -- the background task: queue -> train -> forgetting curve -> install -------------------------------------------
@dataclass
class JobStatus:
    key: str
    name: str
    state: str  # queued | training | evaluating | done | cancelled | failed
    step: int = 0
    steps: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    queue_position: int | None = None
    queue_wait: float | None = None  # estimated seconds until a queued job starts (None: not known yet)
    queue_running: int = 0
    max_jobs: int = 1
    losses: list[dict] = field(default_factory=list)
    preview: torch.Tensor | None = None  # the target rendered at t = T, refreshed every few steps
    error: str | None = None
    train_seconds: float | None = None

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def text(self) -> str:
        if self.state == "queued" and self.queue_position == 0:  # a slot is taken: training starts now
            return f"Forgetting {self.name}: starting…"
        if self.state == "queued":
            who = "job runs" if self.max_jobs == 1 else "jobs run"
            place = f"place {self.queue_position} in the queue" if self.queue_position else "joining the queue"
            if self.queue_wait is not None:
                when = f"yours should start in {_duration(self.queue_wait)}"
            else:
                when = "an estimate follows once the job ahead has made some progress"
            return (f"Waiting for the server: {place} ({self.max_jobs} {who} at a time, "
                    f"{self.queue_running} running now); {when}.")
        if self.state == "training":
            if self.step == 0:
                return f"Forgetting {self.name}: starting…"
            eta = f" · about {self.eta:.0f} s left" if self.eta is not None else ""
            return f"Forgetting {self.name}: step {self.step}/{self.steps} · {self.elapsed:.1f} s{eta}"
        if self.state == "evaluating":
            return f"Forgetting {self.name}: measuring the forgetting curve with the judge network…"
        if self.state == "done":
            if self.steps:
                return (f"Done: {self.name} forgotten in {self.elapsed:.1f} s ({self.steps} steps"
                        f"{f', training {self.train_seconds:.1f} s' if self.train_seconds else ''}). "
                        "Move the intensity slider.")
            return f"Restored the adapter for {self.name}. Move the intensity slider."
        if self.state == "cancelled":
            at = f" at step {self.step}/{self.steps}" if self.step else ""
            return f"Cancelled{at}. Nothing was changed; earlier identities are untouched."
        return f"Failed: {self.error}. Earlier identities are untouched."


class ForgetTask:
    """Waits for a queue slot, trains (unless an adapter is given), measures the curve, then calls ``on_done``."""

    _ids = itertools.count(1)

    def __init__(self, res: Resources, queue: JobQueue, entry: Entry, config: ForgetConfig | None,
                 adapter: ODEAdapter | None, on_done: Callable[[ForgetTask], None], curve_views: int = 6,
                 preview_every: int = 5, times: JobTimes | None = None):
        self.id = next(self._ids)
        self.times = times or JOB_TIMES
        self._eval_t0: float | None = None
        self.res, self.queue, self.entry, self.config = res, queue, entry, config
        self.adapter, self.curve = adapter, None
        self.on_done, self.curve_views, self.preview_every = on_done, curve_views, preview_every
        self.state = "queued"
        self.error: str | None = None
        self.job: ForgetJob | None = None
        self.preview: torch.Tensor | None = None
        self._stop = threading.Event()
        self._backend = None
        self._t0 = time.time()
        self.train_seconds: float | None = None
        self.seconds: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"legato-task-{self.id}")

    def start(self) -> ForgetTask:
        self.thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()
        if self.job is not None:
            self.job.cancel()

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def _on_progress(self, ev: ProgressEvent) -> None:
        # runs in the training thread between steps; the adapter is attached to the private backend at t = T
        backend = self._backend
        if backend is not None and (ev.step % self.preview_every == 0 or ev.step in (1, ev.steps)):
            with torch.no_grad():
                self.preview = backend.render(self.entry.latent, self.entry.view)[0]

    def _run(self) -> None:
        try:
            if not self.queue.acquire(self, self._stop.is_set):
                self.state = "cancelled"
                return
            try:
                self._t0 = time.time()
                backend = self._backend = self.res.private_backend()
                if self.adapter is None:
                    self.state = "training"
                    self.job = ForgetJob(backend, self.entry.latent, self.config, on_progress=self._on_progress)
                    if self._stop.is_set():
                        self.job.cancel()
                    self.job.start()
                    self.job.thread.join()
                    if self.job.state != "done":
                        self.error = (f"{type(self.job.error).__name__}: {self.job.error}"
                                      if self.job.error is not None else None)
                        self.state = self.job.state
                        return
                    self.adapter = self.job.result.adapter
                    self.train_seconds = self.job.result.seconds
                    self.times.record(steps=self.config.steps, train_seconds=self.train_seconds)
                judge = self.res.judge
                if judge is not None:  # None: a diffusers backend without an insightface pack, so no curve
                    self.state = "evaluating"
                    self._eval_t0 = time.time()
                    views = 1 if self.res.kind == "ddpm" else self.curve_views  # DDIM from x_T has no views
                    self.curve = forgetting_curve(backend, self.adapter, self.entry.latent, judge,
                                                  self.res.curve_retained_latents, views,
                                                  should_stop=self._stop.is_set)
                    self.times.record(curve_seconds=time.time() - self._eval_t0)
                self.seconds = time.time() - self._t0
                self.on_done(self)
                self.state = "done"
            finally:
                self.queue.release(self)
                self._backend = None  # the private copy (~15 MB) is not needed any more
                if self.job is not None:
                    self.job.backend = None
        except InterruptedError:
            self.state = "cancelled"
        except Exception as e:  # reported to the person, never raised into the UI thread
            self.error = f"{type(e).__name__}: {e}"
            self.state = "failed"

    def expected_remaining(self) -> float | None:
        """Seconds this task still needs (training, then its curve), from its own progress and the server's
        averages; None when nothing is known yet (before the first job on this server has finished)."""
        if self.done:
            return 0.0
        curve = self.times.curve_seconds if self.res.has_judge else 0.0
        if self.state == "evaluating":
            return None if curve is None else max(curve - (time.time() - (self._eval_t0 or time.time())), 1.0)
        steps = self.config.steps if self.config is not None else 0
        ev = self.job.latest if self.job is not None else None
        if ev is not None and ev.step > 0:
            train = float(ev.eta)
            per_step = ev.elapsed / ev.step
        else:
            per_step = self.times.step_seconds
            if per_step is None and steps:
                return None
            train = steps * (per_step or 0.0)
        if curve is None:  # no curve measured yet on this server: guess it as 20 training steps
            curve = 20 * per_step if per_step is not None else None
        return None if curve is None else train + curve

    def status(self) -> JobStatus:
        st = JobStatus(self.entry.key, self.entry.name, self.state, max_jobs=self.queue.max_jobs,
                       queue_running=self.queue.running, preview=self.preview, error=self.error,
                       train_seconds=self.train_seconds)
        if self.config is not None:
            st.steps = self.config.steps
        if self.state == "queued":
            st.queue_position = self.queue.position(self)
            st.queue_wait = self.queue.wait_estimate(self)
        ev = self.job.latest if self.job is not None else None
        if ev is not None:
            st.step, st.steps, st.eta = ev.step, ev.steps, ev.eta
            st.losses = [e.losses for e in list(self.job.events)]
        if self.state != "queued":
            st.elapsed = self.seconds if self.seconds is not None else time.time() - self._t0
        if self.state == "done" and self.job is None:
            st.steps = 0  # restored from a file, not trained here
        return st


_LIVE_STUDIOS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _shutdown() -> None:
    """Stop background threads before the interpreter tears torch down under them."""
    studios = list(_LIVE_STUDIOS)
    for studio in studios:
        studio.close()
    for studio in studios:
        studio.join(10)


# -- the session ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


class Studio:
    """One browser session: identities, their adapters and intensities, and at most one running task."""

    CELL = 128  # grid cells are multiples of 16 px so identical cells encode to identical JPEG blocks
    GAP = 16
    LABEL_W = 112
    HEADER_H = 32

    KEEP_FILES = 6  # rendered files of one kind kept in the session folder (older ones are deleted)

    def __init__(self, resources: Resources | None = None, queue: JobQueue | None = None,
                 default_config: ForgetConfig | None = None, curve_views: int = 6, max_identities: int = MAX_IDENTITIES,
                 render_cache: int = 40, slider_step: float | None = 0.05, session_root: str | Path | None = None):
        """``session_root``: where this session's folder is made (default: the system temp dir); the app puts it
        inside gradio's cache so that gradio serves the files from there instead of copying them."""
        self.res = resources or get_resources()
        self.queue = queue or JOB_QUEUE
        self.default_config = default_config or ForgetConfig()
        self.curve_views, self.max_identities = curve_views, max_identities
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.stack = AdapterStack(self.res.render_backend)
        self.task: ForgetTask | None = None
        self._finished_seen: int | None = None
        self._lock = threading.RLock()
        self._view_lock = threading.Lock()  # one grid + text at a time (see ``view``)
        self._counter = itertools.count(1)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = max(render_cache, int(2 / slider_step) + 4 if slider_step else 0)
        self._tmpdir: Path | None = None
        self.session_root = Path(session_root) if session_root is not None else None
        self._published: dict[str, deque[Path]] = {}
        self._file_ids = itertools.count(1)
        self.compose = False  # apply the session's other forgotten identities in the bottom row too
        self.last_active = time.monotonic()
        self.closed_reason: str | None = None
        self._threads: list[threading.Thread] = []
        self.slider_step = slider_step
        self._prefill_key: str | None = None
        self._prefill_wake = threading.Event()
        self._prefill_thread: threading.Thread | None = None
        self.prefill_done = False
        self.ui: dict = {}  # scratch space for the UI layer (e.g. what the page already shows)
        self.closed = False
        _LIVE_STUDIOS.add(self)

    @property
    def backend_label(self) -> str:
        """Which backend is live (shown in the app), e.g. "embedded face world (CPU)"."""
        return self.res.backend_label

    def touch(self) -> None:
        """The person did something: the session's idle clock starts again."""
        self.last_active = time.monotonic()

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last ``touch``; a running or queued job counts as activity."""
        return 0.0 if self.busy else time.monotonic() - self.last_active

    # -- identities ----------------------------------------------------------------------------------------
    def _check_room(self) -> None:
        if self.closed:
            raise StudioError("this session has ended; reload the page")
        if len(self.entries) >= self.max_identities:
            raise StudioError(f"this session already holds {self.max_identities} identities, the most it can hold; "
                              "remove one (select it and press “Remove identity”) to make room for another")

    def _add(self, name: str, image: torch.Tensor) -> Entry:
        """image: (3, S, S) in [0, 1], S = ``Resources.image_size``."""
        self._check_room()
        try:
            w, v = self.res.base.invert(image[None])
        except ValueError as e:  # e.g. insightface found no face: the message says what to do
            raise StudioError(str(e)) from e
        return self._add_latent(name, to_pil(image), w, v)

    def _add_latent(self, name: str, source: Image.Image, w: torch.Tensor, v: torch.Tensor) -> Entry:
        grid_views = torch.cat([v, self.res.base.canonical_views(3)[1:]])
        with torch.inference_mode():
            base_target = self.res.base.render(w.expand(len(grid_views), -1), grid_views)
        with self._lock:
            self._check_room()
            key = str(next(self._counter))
            entry = Entry(key, name, source, to_pil(base_target[0]), w, v, grid_views)
            entry._base_target = quantize(base_target)
            self.entries[key] = entry
            return entry

    def add_image(self, image: str | Path | Image.Image, name: str | None = None) -> Entry:
        """Add a face from a file or PIL image (validated: every PIL mode and EXIF orientation are normalised, an
        animated image gives its first frame, junk is refused). ``Entry.notes`` says what the person should know."""
        self._check_room()
        notes: list[str] = []
        im = open_image(image, notes)  # raises ImageError with a clear message
        if name is None:
            name = Path(image).name if isinstance(image, str | Path) else "uploaded face"
        entry = self._add(name, to_tensor(im, self.res.image_size))
        entry.notes = notes
        return entry

    @staticmethod
    def face_id(value) -> int:
        """The "add by id" value as a face-world id: a whole number from ``MIN_FACE_ID`` (200,000: the development
        range, then the evaluation range from 1,000,000) to ``MAX_FACE_ID``; otherwise a StudioError that says why.
        Nothing is rounded: 3.7 is refused, not read as 4."""
        if isinstance(value, str):
            text = value.strip().replace(",", "").replace("_", "")
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise StudioError(f"a face-world id is a whole number such as {MIN_FACE_ID + 10}; "
                                      f"{value!r} is not one") from None
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise StudioError(f"a face-world id is a whole number such as {MIN_FACE_ID + 10}; {value!r} is not one")
        if isinstance(value, float | np.floating) and not (np.isfinite(value) and float(value).is_integer()):
            raise StudioError(f"a face-world id is a whole number such as {MIN_FACE_ID + 10}; {value!r} is not one "
                              "(ids are not rounded)")
        n = int(value)
        if n < MIN_FACE_ID:
            raise StudioError(f"face-world id {n:,} is refused: ids below {MIN_FACE_ID:,} are the ones the networks "
                              "were trained and tuned on, so forgetting one would not be a fair test; use an id from "
                              f"{MIN_FACE_ID:,} (development range) or from {EVALUATION_START:,} (evaluation range)")
        if n > MAX_FACE_ID:
            raise StudioError(f"face-world id {n:,} is refused: this demo takes ids from {MIN_FACE_ID:,} "
                              f"to {MAX_FACE_ID:,}")
        return n

    def add_identity(self, face_id: int) -> Entry:
        """Add a face-world identity by id (frontal view 0); see ``face_id`` for the ids taken."""
        face_id = self.face_id(face_id)
        if not self.res.face_world:
            raise StudioError(f"face-world identities need the embedded backend; this demo runs "
                              f"{self.res.backend_label}: upload a photo instead")
        return self._add(f"face-world #{face_id}", faceworld.render([face_id], 0)[0])

    def get(self, key: str | None = None) -> Entry:
        with self._lock:
            if self.closed:
                raise StudioError("this session has ended; reload the page")
            if not self.entries:
                raise StudioError("add a face first: drop an image or pick a face-world identity")
            if key is None or key == "":
                return next(reversed(self.entries.values()))
            if not isinstance(key, str) or key not in self.entries:
                raise StudioError(f"there is no identity {key!r} in this session; choose one from the Identity list")
            return self.entries[key]

    def remove(self, key: str, wait: float = 10.0) -> Entry:
        """Drop an identity with its adapter, its renders and its exported file; a job running for it is cancelled
        (waited for up to ``wait`` seconds, so that the next job can start)."""
        with self._lock:
            entry = self.get(key or None)
            task = self.task if self.task is not None and self.task.entry is entry and not self.task.done else None
            if task is not None:
                task.cancel()
            self.entries.pop(entry.key, None)
            self._cache.clear()
            for path in self._entry_files(entry):
                path.unlink(missing_ok=True)
            entry._export, entry.adapter, entry.curve = None, None, None
        if task is not None:
            task.thread.join(wait)
        return entry

    # -- jobs ------------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done

    def _start_task(self, entry: Entry, config: ForgetConfig | None, adapter: ODEAdapter | None) -> ForgetTask:
        if self.busy:
            raise BusyError(f"a job is already running in this session ({self.task.entry.name}); "
                            "wait for it to finish or cancel it")
        self.task = ForgetTask(self.res, self.queue, entry, config, adapter, self._install,
                               curve_views=self.curve_views)
        return self.task.start()

    def start_forget(self, key: str | None = None, steps: int | None = None, seed: int | None = None) -> ForgetTask:
        with self._lock:
            if self.closed:
                raise StudioError("this session has ended; reload the page")
            entry = self.get(key)
            if self.busy:
                raise BusyError(f"a job is already running in this session ({self.task.entry.name}); "
                                "wait for it to finish or cancel it")
            if entry.ready:
                raise StudioError(f"{entry.name} is already forgotten; add the face again to train another adapter")
            if entry.latent is None:
                raise StudioError(f"{entry.name} has no face to train on")
            config = copy.deepcopy(self.default_config)
            if steps is not None:
                steps = int(steps)
                if not 1 <= steps <= 2000:
                    raise StudioError(f"steps must be between 1 and 2000, got {steps}")
                config.steps = steps
            if seed is not None:
                config.seed = int(seed)
            return self._start_task(entry, config, None)

    def _install(self, task: ForgetTask) -> None:
        """Called from the task thread once the adapter and its curve are ready."""
        with self._lock:
            entry = task.entry
            if self.closed or self.entries.get(entry.key) is not entry:
                return
            adapter = task.adapter
            adapter.description.setdefault("name", entry.name)
            if entry.latent is not None:
                adapter.description["target_latent"] = [round(x, 6) for x in entry.latent[0].tolist()]
                adapter.description["target_view"] = [round(x, 6) for x in entry.view[0].tolist()]
            entry.adapter, entry.curve = adapter, task.curve
            entry.seconds = task.train_seconds
            entry.steps = task.config.steps if task.config is not None else None
            entry.t = entry.t_max
            self._cache.clear()
        self.prefill(entry.key)

    def status(self) -> JobStatus | None:
        task = self.task
        return task.status() if task is not None else None

    def take_finished(self) -> JobStatus | None:
        """The status of the last task the first time it is seen finished (so the UI refreshes once)."""
        with self._lock:
            task = self.task
            if task is None or not task.done or self._finished_seen == task.id:
                return None
            self._finished_seen = task.id
            return task.status()

    def cancel(self) -> bool:
        task = self.task
        if task is None or task.done:
            return False
        task.cancel()
        return True

    def wait(self, timeout: float | None = None) -> JobStatus | None:
        task = self.task
        if task is not None:
            task.thread.join(timeout)
        return self.status()

    # -- rendering ------------------------------------------------------------------------------------------
    def set_t(self, key: str, t: float) -> float:
        entry = self.get(key)
        t = float(t)
        if not np.isfinite(t):
            raise StudioError("t must be a number")
        entry.t = float(min(max(t, 0.0), entry.t_max))
        return entry.t

    def _grid_inputs(self, entry: Entry) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lat, vw, base = [], [], []
        if entry.latent is not None:
            lat.append(entry.latent.expand(len(entry.grid_views), -1))
            vw.append(entry.grid_views)
            base.append(entry._base_target)
        lat.append(self.res.retained_latents)
        vw.append(self.res.retained_views)
        base.append(self.res.retained_base)
        return torch.cat(lat), torch.cat(vw), torch.cat(base)

    def set_compose(self, on: bool) -> None:
        """Whether the bottom row also applies this session's other forgotten identities, each at its own t."""
        with self._lock:
            self.compose = bool(on)

    def composed(self, entry: Entry) -> list[Entry]:
        """The other forgotten identities whose adapters act in ``entry``'s bottom row (composition on, t > 0)."""
        with self._lock:
            if not self.compose:
                return []
            return [e for e in self.entries.values() if e.ready and e is not entry and e.t > 0]

    def _own_and_applied(self, entry: Entry | None) -> tuple[Entry, str, list[Entry], str]:
        with self._lock:
            entry = entry if entry is not None else self.get()
            applied = self.composed(entry)
            own = (f"{entry.key} · {entry.name} at t = {entry.t:.2f}" if entry.ready
                   else f"{entry.key} · {entry.name} (not forgotten yet)")
        names = [f"{e.key} · {e.name} at t = {e.t:.2f}" for e in applied]  # keys: two uploads may share a name
        listed = (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]) if names else ""
        return entry, own, applied, listed

    def composition_footer(self, entry: Entry | None = None) -> str:
        """The line written under the grid's rows when other adapters act in the bottom row ("" otherwise), so that
        a composed grid says so wherever it is shown or saved."""
        with self._lock:
            if not self.entries:
                return ""
            _, own, applied, listed = self._own_and_applied(entry)
        return f"Bottom row: {own}, composed with {listed}." if applied else ""

    def composition_text(self, entry: Entry | None = None) -> str:
        """One or two plain sentences for the page on what the bottom row applies ("" when there is nothing to
        say: no other forgotten identity in the session)."""
        with self._lock:
            if not self.entries:
                return ""
            entry, own, applied, listed = self._own_and_applied(entry)
            others = [e for e in self.entries.values() if e.ready and e is not entry]
        if applied:
            return (f"Composition is on: the bottom row applies {own} together with {listed}. Each identity keeps "
                    "its own t; select one to change it.")
        if self.compose and others:
            return f"Composition is on, but every other forgotten identity is at t = 0: the bottom row is {own} alone."
        if others:
            n = len(others)
            return (f"Bottom row: {own} alone; composition is off, so the {n} other forgotten "
                    f"identit{'y' if n == 1 else 'ies'} of this session {'is' if n == 1 else 'are'} not applied.")
        return ""

    def _rows_u8(self, entry: Entry, t: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """uint8 (before, after, cache_hit) with ``entry``'s adapter at ``t``; with composition on, every other
        ready adapter acts too, each at its own t. Composition off and t = 0: after is exactly before."""
        with self._lock:
            ts = {e.key: e.t for e in self.composed(entry)}
            if entry.ready:
                ts[entry.key] = t
            adapters = [(e.key, e.adapter) for e in self.entries.values() if e.key in ts]
            lat, vw, before = self._grid_inputs(entry)
            active = tuple((k, id(a), round(ts[k], 6)) for k, a in adapters if ts[k] > 0)
            if not active:
                return before, before, True  # every adapter at t = 0 is exactly the base model
            cache_key = (entry.key, active)
            if cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return before, self._cache[cache_key], True
        with self.res.render_lock:  # only one session's adapters are ever attached to the shared backend
            try:
                for name, adapter in adapters:
                    self.stack.add(name, adapter)
                    adapter.set_t(ts[name])
                with torch.inference_mode():
                    after = quantize(self.res.render_backend.render(lat, vw))
            finally:
                for name in list(self.stack.adapters):
                    self.stack.remove(name)
        with self._lock:
            self._cache[cache_key] = after
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return before, after, False

    def render_rows(self, key: str | None = None, t: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(before, after) in [0, 1] (8-bit values): the grid's images by the base model (t = 0, cached) and with
        the selected identity's adapter at ``t`` (stored as its intensity) and every other one at its own t."""
        entry = self.get(key)
        if t is not None:
            self.set_t(entry.key, t)
        before, after, _ = self._rows_u8(entry, entry.t)
        return before.float() / 255, after.float() / 255

    def render_grid(self, key: str | None = None, t: float | None = None) -> Image.Image:
        """The grid image: top row t = 0 (the base model), bottom row at t; target views left, retained right."""
        return self.view(key, t)[0]

    def view(self, key: str | None = None, t: float | None = None) -> tuple[Image.Image, str, float]:
        """(grid image, the page's composition text, the t they show), made together: another view made at the
        same time (the slider moving while the identity is being selected) cannot mix a different t into them."""
        with self._view_lock:
            entry = self.get(key)
            if t is not None:
                self.set_t(entry.key, t)
            t = entry.t
            before, after, _ = self._rows_u8(entry, t)
            grid = self.compose_grid(before, after, entry, self.composition_footer(entry))
            return grid, self.composition_text(entry), t

    # -- background prefill of the slider's positions -------------------------------------------------------------
    def slider_values(self, entry: Entry) -> list[float]:
        n = round(entry.t_max / self.slider_step)
        return [round(min(k * self.slider_step, entry.t_max), 6) for k in range(n + 1)]

    def prefill(self, key: str | None = None) -> None:
        """Render the selected identity at every slider position in a low-priority background thread, so that
        dragging the slider only reads the cache. Calling it again switches to the newly selected identity."""
        if not self.slider_step:
            return
        with self._lock:
            if self.closed:
                return
            self._prefill_key = self.get(key).key
            self._prefill_wake.set()
            if self._prefill_thread is None:
                self._prefill_thread = threading.Thread(target=self._prefill_loop, daemon=True,
                                                        name="legato-prefill")
                self._prefill_thread.start()

    def _prefill_loop(self) -> None:
        try:  # Linux: a thread id is a valid PRIO_PROCESS target and lowers only this thread
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while not self.closed:
            if not self._prefill_wake.wait(1.0):
                continue
            self._prefill_wake.clear()
            with self._lock:
                entry = self.entries.get(self._prefill_key)
            if entry is None or not entry.ready:
                continue
            values = sorted(self.slider_values(entry), key=lambda v: abs(v - entry.t))  # nearest first
            for t in values:
                if self.closed or self._prefill_wake.is_set() or entry.adapter is None:
                    break
                self._rows_u8(entry, t)
                time.sleep(0.005)  # let an interactive render take the render lock between two prefills
            self.prefill_done = not self._prefill_wake.is_set()

    def compose_grid(self, before: torch.Tensor, after: torch.Tensor, entry: Entry, footer: str = "") -> Image.Image:
        """uint8 rows (N, 3, 64, 64) -> labelled grid image; ``footer``: text under the rows, in the labels' font
        (what the bottom row composes).

        The cells are laid out at half scale and the whole canvas is upscaled once (PIL bicubic, ~1 ms); every
        cell sits on a 16 px boundary of the result, so identical cells give identical JPEG blocks.
        """
        c, g, lw, hh = self.CELL // 2, self.GAP // 2, self.LABEL_W // 2, self.HEADER_H // 2
        n_target = 0 if entry.latent is None else len(entry.grid_views)
        n = len(before)
        cells = torch.cat([before, after])
        if cells.shape[-1] != c:
            cells = quantize(F.interpolate(cells.float() / 255, size=(c, c), mode="bicubic", align_corners=False))
        cells = cells.permute(0, 2, 3, 1).numpy()
        sep = 4  # between two cells of a group; groups are g apart (horizontal offsets do not matter for JPEG
        # identity of the rows: the bottom row is exactly c + g = 72 -> 144 px below the top one)
        xs = [lw + i * (c + sep) + (g if n_target and i >= n_target else 0) for i in range(n)]
        canvas = np.full((hh + 2 * c + 2 * g, xs[-1] + c + g, 3), 255, np.uint8)
        for row in range(2):
            y = hh + row * (c + g)
            for i, x in enumerate(xs):
                canvas[y:y + c, x:x + c] = cells[row * n + i]
        im = Image.fromarray(canvas)
        im = im.resize((im.width * 2, im.height * 2), Image.BICUBIC)
        draw = ImageDraw.Draw(im)
        font, small = _font(15), _font(13)
        name = entry.name if len(entry.name) <= 30 else entry.name[:29] + "…"
        if n_target:
            draw.text((2 * xs[0] + 4, 8), f"forgotten: {name}", fill=(150, 30, 30), font=font)
        draw.text((2 * xs[n_target] + 4, 8), "retained (other identities)", fill=(30, 100, 30), font=font)
        y1, y2 = 2 * hh + c, 2 * (hh + c + g) + c
        draw.text((8, y1 - 18), "original", fill=(0, 0, 0), font=font)
        draw.text((8, y1 + 2), "t = 0", fill=(90, 90, 90), font=small)
        draw.text((8, y2 - 18), "forgetting", fill=(0, 0, 0), font=font)
        draw.text((8, y2 + 2), f"t = {entry.t:.2f}", fill=(90, 90, 90), font=small)
        if footer:
            im = self._add_footer(im, footer, font)
        return im

    @staticmethod
    def _add_footer(im: Image.Image, text: str, font) -> Image.Image:
        """``im`` with a white band below it holding ``text``, wrapped to the image's width."""
        draw = ImageDraw.Draw(im)
        lines, line = [], ""
        for word in text.split():
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > im.width - 16:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
        out = Image.new("RGB", (im.width, im.height + 8 + 20 * len(lines)), (255, 255, 255))
        out.paste(im, (0, 0))
        draw = ImageDraw.Draw(out)
        for i, text_line in enumerate(lines):
            draw.text((8, im.height + 2 + 20 * i), text_line, fill=(0, 0, 0), font=font)
        return out

    # -- curve ------------------------------------------------------------------------------------------------
    def curve(self, key: str | None = None) -> dict | None:
        """ID_target(t), retention(t) at 9 t's (computed once when the adapter became ready), plus the current t."""
        entry = self.get(key)
        if entry.curve is None:
            return None
        return {**entry.curve, "current_t": entry.t, "name": entry.name}

    # -- this session's files --------------------------------------------------------------------------------
    def _dir(self) -> Path:
        """This session's folder (made on first use, removed by ``close``): every file the session writes."""
        with self._lock:
            if self.closed:
                raise StudioError("this session has ended; reload the page")
            if self._tmpdir is None:
                if self.session_root is not None:
                    self.session_root.mkdir(parents=True, exist_ok=True)
                self._tmpdir = Path(tempfile.mkdtemp(prefix="legato-session-", dir=self.session_root))
            return self._tmpdir

    @property
    def folder(self) -> Path | None:
        """This session's folder, None before the first file (and after ``close``)."""
        return self._tmpdir

    def files(self) -> list[Path]:
        """Every file this session has on disk now."""
        folder = self._tmpdir
        if folder is None or not folder.exists():
            return []
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def _entry_files(self, entry: Entry) -> list[Path]:
        folder = self._tmpdir
        if folder is None:
            return []
        return [p for p in folder.glob(f"*-{entry.key}.*") if p.is_file()] + \
            ([entry._export[1]] if entry._export is not None else [])

    @staticmethod
    def _save_image(im: Image.Image, path: Path) -> Path:
        tmp = path.with_name(f".{path.name}")
        if path.suffix == ".jpeg":
            im.save(tmp, "JPEG", quality=75)  # what gradio's own JPEG encoding of the grid used
        else:
            im.save(tmp, "PNG")
        os.replace(tmp, path)  # never a half-written file on the page
        return path

    def publish(self, image: Image.Image, kind: str, fmt: str = "png") -> Path:
        """Write an image the page shows (``kind``: grid, preview, ...) into this session's folder and return its
        path; only the last ``KEEP_FILES`` of each kind are kept (the page has loaded the older ones)."""
        path = self._dir() / f"{kind}.{next(self._file_ids)}.{'jpeg' if fmt in ('jpg', 'jpeg') else 'png'}"
        self._save_image(image, path)
        with self._lock:
            kept = self._published.setdefault(kind, deque())
            kept.append(path)
            while len(kept) > self.KEEP_FILES:
                kept.popleft().unlink(missing_ok=True)
        return path

    def entry_image(self, entry: Entry, kind: str, image: Image.Image) -> Path:
        """The file of one of ``entry``'s fixed images (its source crop, its inversion), written once; removed
        with the entry."""
        path = self._dir() / f"{kind}-{entry.key}.png"
        if not path.exists():
            self._save_image(image, path)
        return path

    # -- adapters in and out ----------------------------------------------------------------------------------

    def export_adapter(self, key: str | None = None, path: str | Path | None = None) -> Path:
        """Save the entry's adapter to ``path`` (default: a file in this session's temp dir, written once)."""
        entry = self.get(key)
        if not entry.ready:
            raise StudioError(f"{entry.name} has no adapter yet: forget it first")
        if path is not None:
            return entry.adapter.save(path)
        if entry._export is None or entry._export[0] is not entry.adapter or not entry._export[1].exists():
            stem = "".join(ch if ch.isalnum() else "-" for ch in entry.name).strip("-") or "identity"
            saved = entry.adapter.save(self._dir() / f"legato-adapter-{stem}-{entry.key}.safetensors")
            entry._export = (entry.adapter, saved)
        return entry._export[1]

    def import_adapter(self, path: str | Path) -> Entry:
        """Restore an adapter file as a new entry; refuses one made for another base model."""
        path = Path(path)
        with self._lock:
            self._check_room()
            if self.busy:
                raise BusyError("a job is already running in this session; wait for it to finish or cancel it")
        try:
            adapter = ODEAdapter.load(path, self.res.base)
        except AdapterMismatchError as e:
            raise StudioError(f"this adapter belongs to a different base model, so it cannot be used here: {e}") from e
        except (ValueError, KeyError, OSError) as e:
            raise StudioError(f"not a legato adapter file: {e}") from e
        for p in adapter.parameters():
            p.requires_grad_(False)
        desc = adapter.description
        name = str(desc.get("name") or desc.get("identity") or path.name)
        if "identity" in desc and "name" not in desc:
            name = f"face-world #{desc['identity']}"
        if "target_latent" in desc:
            w = torch.tensor(desc["target_latent"], dtype=torch.float32)[None]
            v = torch.tensor(desc.get("target_view") or self.res.base.canonical_views(1)[0].tolist())[None]
            if w.shape[1] != self.res.base.latent_dim:
                raise StudioError("the adapter's stored target does not fit this base model")
            with torch.inference_mode():
                source = to_pil(self.res.base.render(w, v)[0])
            entry = self._add_latent(name, source, w, v)
        elif "identity" in desc:
            entry = self._add(name, faceworld.render([int(desc["identity"])], 0)[0])
        else:
            with self._lock:
                self._check_room()
                key = str(next(self._counter))
                blank = Image.new("RGB", (64, 64), (235, 235, 235))
                entry = Entry(key, name, blank, blank, None, None, None)
                self.entries[key] = entry
        with self._lock:
            self._start_task(entry, None, adapter)
        return entry

    # -- lifetime ----------------------------------------------------------------------------------------------
    def close(self, reason: str | None = None) -> None:
        """Cancel what runs, delete this session's folder and drop everything it holds (the tab went away, the
        session timed out, or the person ended it). ``reason`` is kept in ``closed_reason``."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.closed_reason = reason
            task = self.task
            self.cancel()
            self._threads = [t for t in (task.thread if task is not None else None, self._prefill_thread)
                             if t is not None]
            # nothing of the person stays referenced from here: the task (its entry, adapter, losses) goes too
            self.task = None
            self.entries.clear()
            self._cache.clear()
            self._published.clear()
            self.ui.clear()
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
            self._prefill_wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for this session's background threads (after ``close``)."""
        threads = self._threads if self.closed else [self.task.thread if self.task is not None else None,
                                                     self._prefill_thread]
        for thread in threads:
            if thread is not None and thread.is_alive():
                thread.join(timeout)


__all__ = ["EXAMPLE_IDS", "JOB_QUEUE", "JOB_TIMES", "MAX_FACE_ID", "MIN_FACE_ID", "BusyError", "Entry", "ForgetTask",
           "ImageError", "JobQueue", "JobStatus", "JobTimes", "Resources", "Studio", "StudioError", "forgetting_curve",
           "get_resources", "set_resources"]
