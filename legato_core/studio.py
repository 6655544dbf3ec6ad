"""The demo's session layer, free of any UI toolkit: ``app.py`` is a thin gradio shell over it.

One :class:`Studio` per browser session holds the identities being forgotten. Each entry keeps its source
image, inverted latent and view, its background training task, its trained :class:`ODEAdapter`, its own slider
position ``u`` and its forgetting curve.

The slider. What the person moves is ``u`` in [0, 1]: 0 is the original model, 1 full forgetting, and the adapter's
calibrated dial (``ODEAdapter.t_at``) maps it to the ODE time ``t`` it renders at, so that equal steps of u take
equal steps away from the person (an adapter without a dial, e.g. an older file, gives the raw knob u * t_max).
``u`` is what is stored; ``t`` is derived. The advanced view (``Studio.raw_t``) and the API may set a raw t
instead: it is stored as the first position that reaches it, so both views show the same render.

Isolation. One frozen base generator, ``Resources.base``, serves every session and every training task at once.
Which adapters run is an argument of each render (``adapters.active``, a per-thread context value read by the
base's permanent site hooks), never state on the base: a session's slider render, another session's and a
training job on the same base cannot see each other's adapters, so there is no render lock and no copy of the
base per task.

Server-wide, a :class:`JobQueue` lets at most ``max_jobs`` tasks train at once (FIFO, with queue positions).
"""

from __future__ import annotations

import atexit
import copy
import itertools
import math
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import faceworld
from .adapters import AdapterMismatchError, ODEAdapter, ODEConfig, active
from .adapters.request_log import RequestLog
from .faces import FaceError, PreparedFace, prepare_face
from .images import ImageError, open_image, to_pil, to_tensor
from .metrics import forgetting_curve
from .ranges import DEVELOPMENT, EVALUATION_START
from .serving import text
from .serving.attack_view import attack_picture
from .serving.errors import BusyError, StudioError
from .serving.grid import CELL, GAP, HEADER_H, LABEL_W, compose_grid
from .serving.jobs import ForgetTask, JobStatus
from .serving.model_view import compose_model_grid, judge_at, label_of
from .serving.queue import JOB_QUEUE, JOB_TIMES, JobQueue, JobTimes
from .serving.resources import EXAMPLE_IDS, Resources, get_resources, quantize, set_resources
from .serving.session_folder import SessionFolder
from .unlearning.engine import ForgetConfig
from .unlearning.robust import RobustConfig

# what a forgotten identity adds to a session's resident memory: 0.7-1.0 MB (RSS after gc and malloc_trim, 30
# face-world identities forgotten in one session, 10 steps each, 6-view curve, slider prefill on; a 250-step run's
# progress events add 0.17 MB), so 50 cost ~60 MB over the server's ~460 MB; the many-people view stays < 1 s
MAX_IDENTITIES = 50
MIN_FACE_ID = DEVELOPMENT.start  # below: ids the networks were trained or tuned on (legato_core.ranges)
MAX_FACE_ID = 999_999_999  # a sane maximum for the "add by id" box


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
    u: float = 0.0  # the slider position, in [0, 1]: what the person set (t is derived from it)
    curve: dict | None = None
    seconds: float | None = None  # training wall time
    steps: int | None = None
    face: PreparedFace | None = None  # uploads: the faces detected and the crop used (legato_core.faces)
    face_preview: Image.Image | None = None  # uploads: the photo, small, with the detected boxes drawn
    notes: list[str] = field(default_factory=list)  # what the person should be told about their file
    run: ForgetTask | None = field(default=None, repr=False)  # its finished training (losses, last preview)
    _base_target: torch.Tensor | None = field(default=None, repr=False)  # uint8 t = 0 renders of grid_views
    _export: tuple | None = field(default=None, repr=False)  # (adapter, path) of the session's exported copy

    @property
    def ready(self) -> bool:
        return self.adapter is not None

    @property
    def t_max(self) -> float:
        """The largest t the page offers: the slider's end (a dial may end where the person is first unrelated,
        before the adapter's own t_max)."""
        return float(self.adapter.t_at(1.0) if self.adapter is not None else ODEConfig().t_max)

    @property
    def t(self) -> float:
        """The ODE time the render uses: the slider position ``u`` through the adapter's dial."""
        return self.t_at(self.u)

    def t_at(self, u: float) -> float:
        """t at slider position ``u`` in [0, 1] (the raw knob u * t_max before an adapter exists)."""
        adapter = self.adapter
        return adapter.t_at(u) if adapter is not None else float(u) * self.t_max

    def u_at(self, t: float) -> float:
        """The first slider position whose t is ``t`` (``ODEAdapter.u_at``; no adapter yet: t / t_max)."""
        if self.adapter is not None:
            return self.adapter.u_at(t)
        return min(max(float(t), 0.0), self.t_max) / self.t_max

    @property
    def label(self) -> str:
        suffix = " (forgotten)" if self.ready else ""
        return f"{self.key} · {self.name}{suffix}"


_LIVE_STUDIOS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _shutdown() -> None:
    """Stop background threads before the interpreter tears torch down under them."""
    studios = list(_LIVE_STUDIOS)
    for studio in studios:
        studio.close()
    for studio in studios:
        studio.join(10)


class Studio:
    """One browser session: identities, their adapters and intensities, and at most one running task."""

    CELL, GAP, LABEL_W, HEADER_H = CELL, GAP, LABEL_W, HEADER_H  # the grid's layout (serving.grid)

    KEEP_FILES = SessionFolder.KEEP_FILES  # rendered files of one kind kept in the session folder

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
        self.task: ForgetTask | None = None
        self._finished_seen: int | None = None
        self._lock = threading.RLock()
        self._view_lock = threading.Lock()  # one grid + text at a time (see ``view``)
        self._counter = itertools.count(1)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = max(render_cache, int(2 / slider_step) + 4 if slider_step else 0)
        self._model_cache: tuple[tuple, torch.Tensor] | None = None  # (whose adapters at what t, the model's renders)
        self.session_files = SessionFolder(session_root)
        self.compose = False  # apply the session's other forgotten identities in the bottom row too
        self.raw_t = False  # the page's slider shows raw ODE time t (the advanced view) instead of u
        self.robust = False  # forget in robust mode (unlearning/robust.py): holds against re-inverting the photo
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
                              "remove one (select it and press “Remove identity”, or remove its request in the "
                              "table of requests) to make room for another")

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

    def prepare_upload(self, photo: Image.Image) -> PreparedFace:
        """Face handling for an upload: detect, keep the largest face, align it to the backend's crop.

        Raises StudioError with a message for the person (no face, tiny face); see ``legato_core.faces``."""
        try:
            return prepare_face(photo, self.res.face_crop)
        except FaceError as e:
            raise StudioError(str(e)) from e

    def add_image(self, image: str | Path | Image.Image, name: str | None = None) -> Entry:
        """Add a face from a file or PIL image (validated: every PIL mode and EXIF orientation are normalised, an
        animated image gives its first frame, junk is refused; the face is detected and aligned first, see
        :meth:`prepare_upload`). ``Entry.notes`` says what the person should know."""
        self._check_room()
        notes: list[str] = []
        im = open_image(image, notes)  # raises ImageError with a clear message
        if name is None:
            name = Path(image).name if isinstance(image, str | Path) else "uploaded face"
        face = self.prepare_upload(im)
        entry = self._add(name, face.image)
        entry.face, entry.face_preview = face, face.annotated(im)
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
            exported = [entry._export[1]] if entry._export is not None else []
            for path in self.session_files.files_of(entry.key) + exported:
                path.unlink(missing_ok=True)
            entry._export, entry.adapter, entry.curve, entry.run = None, None, None, None
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

    def start_forget(self, key: str | None = None, steps: int | None = None, seed: int | None = None,
                     robust: bool | None = None) -> ForgetTask:
        """Train ``key``'s adapter in the background. ``robust``: robust mode (default: the session's setting,
        ``set_robust``)."""
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
            if (self.robust if robust is None else robust) and config.robust is None:
                if not self.res.face_world:
                    raise StudioError("robust mode reads identities of latents by rendering them, which only the "
                                      "embedded face world does fast enough for now")
                config.robust = RobustConfig()
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
            entry.u = 1.0
            entry.run = task
            self._cache.clear()
        self.prefill(entry.key)

    def status(self) -> JobStatus | None:
        task = self.task
        return task.status() if task is not None else None

    def run_of(self, key: str | None = None) -> JobStatus | None:
        """The status of identity ``key``'s training run, running or finished (None: it has none): the page's loss
        plot and preview show the selected identity's run, never another's."""
        entry = self.get(key)
        task = self.task
        if task is not None and task.entry is entry:
            return task.status()
        return entry.run.status() if entry.run is not None else None

    def status_text(self, key: str | None = None) -> str:
        """The status line for the selected identity ``key``, then the session's job if it runs for another."""
        entry = self.get(key)
        own = self.run_of(entry.key)
        if own is not None:
            line = own.text()
        elif entry.ready:
            line = f"{entry.label}: move the forgetting slider."
        elif self.busy:
            line = f"{entry.label}: not forgotten yet; it can be forgotten when the running job ends."
        else:
            line = f"{entry.label}: not forgotten yet; press Forget to train its adapter."
        task = self.task
        if task is not None and task.entry is not entry and not task.done:
            line += f" Meanwhile: {task.status().text()}"
        return line

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
    def set_u(self, key: str, u: float) -> float:
        """Move ``key``'s slider to position ``u`` (clamped to [0, 1]); returns the position stored."""
        entry = self.get(key)
        u = float(u)
        if not np.isfinite(u):
            raise StudioError("u must be a number")
        entry.u = min(max(u, 0.0), 1.0)
        return entry.u

    def set_t(self, key: str, t: float) -> float:
        """Move ``key``'s slider to raw ODE time ``t`` (clamped to [0, t_max]; the advanced view and the API): stored
        as the first position that reaches t (``Entry.u_at``). Returns the t it renders at."""
        entry = self.get(key)
        t = float(t)
        if not np.isfinite(t):
            raise StudioError("t must be a number")
        entry.u = entry.u_at(t)
        return entry.t

    def _move(self, entry: Entry, t: float | None, u: float | None) -> None:
        """Store a new setting given as raw t or as position u (at most one of them)."""
        if t is not None and u is not None:
            raise StudioError("give the slider position u or the raw ODE time t, not both")
        if u is not None:
            self.set_u(entry.key, u)
        elif t is not None:
            self.set_t(entry.key, t)

    def set_raw_t(self, on: bool) -> None:
        """Whether the page's slider shows raw ODE time t (the paper's view) instead of the position u. Only the
        view changes: every identity keeps its stored position, so the render stays the same."""
        with self._lock:
            self.raw_t = bool(on)

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

    def set_robust(self, on: bool) -> None:
        """Whether the next forget runs in robust mode (every latent the model draws as the person is forgotten)."""
        with self._lock:
            self.robust = bool(on)

    def attack(self, key: str | None = None, steps: int = 200) -> dict:
        """Try to bring a forgotten identity back: attack (a) of ``attacks.py`` on the model as the page shows it
        (the identity's adapter at its slider setting, with composition on every other one at its own).

        The person's photo is inverted into that model with the backend's own inversion (``steps`` refinement
        steps); the judge scores the attacker's best render. Returns the picture (photo | what the attacker got),
        the similarity, the judge's threshold, whether forgetting held, and the u and t attacked."""
        from .attacks import judge_attack

        entry = self.get(key)
        if not entry.ready:
            raise StudioError(f"{entry.name} is not forgotten yet: press Forget first, then try to bring them back")
        if entry.source is None or not self.res.face_world:
            raise StudioError("the attack inverts the person's photo hundreds of times, which only the embedded "
                              "face world does fast enough for now")
        with self._lock:
            ts = {e.key: e.t for e in self.composed(entry)}
            ts[entry.key], u = entry.t, entry.u
            adapters = [(e.adapter, ts[e.key]) for e in self.entries.values() if e.key in ts]
        base, judge = self.res.base, self.res.judge
        photo = to_tensor(entry.source.convert("RGB"), self.res.image_size)[None]
        with active(base, adapters):
            out = judge_attack(base, photo, judge, steps)
        similarity = out["best"][0]
        return {"image": attack_picture(entry.source, to_pil(out["best_render"][0]), similarity, judge.threshold),
                "similarity": similarity, "threshold": judge.threshold, "held": similarity < judge.threshold,
                "u": u, "t": ts[entry.key], "steps": steps, "name": entry.name,
                "robust": entry.adapter.gate is not None}

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

    def composition_footer(self, entry: Entry | None = None) -> str:
        """The line written under the grid's rows when other adapters act in the bottom row ("" otherwise)."""
        with self._lock:
            if not self.entries:
                return ""
            entry = entry if entry is not None else self.get()
            return text.composition_footer(entry, self.composed(entry))

    def composition_text(self, entry: Entry | None = None) -> str:
        """What the page says the bottom row applies ("" when there is nothing to say)."""
        with self._lock:
            if not self.entries:
                return ""
            entry = entry if entry is not None else self.get()
            others = sum(e.ready and e is not entry for e in self.entries.values())
            return text.composition_text(entry, self.composed(entry), self.compose, others)

    def _rows_u8(self, entry: Entry, t: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """uint8 (before, after, cache_hit) with ``entry``'s adapter at ``t``; with composition on, every other
        ready adapter acts too, each at its own t. Composition off and t = 0: after is exactly before."""
        with self._lock:
            ts = {e.key: e.t for e in self.composed(entry)}
            if entry.ready:
                ts[entry.key] = t
            adapters = [(e.key, e.adapter) for e in self.entries.values() if e.key in ts]
            lat, vw, before = self._grid_inputs(entry)
            running = tuple((k, id(a), round(ts[k], 6)) for k, a in adapters if ts[k] > 0)
            if not running:
                return before, before, True  # every adapter at t = 0 is exactly the base model
            cache_key = (entry.key, running)
            if cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return before, self._cache[cache_key], True
        base = self.res.base
        with torch.inference_mode(), active(base, [(a, ts[k]) for k, a in adapters]):
            after = quantize(base.render(lat, vw))
        with self._lock:
            self._cache[cache_key] = after
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return before, after, False

    def render_rows(self, key: str | None = None, t: float | None = None, *,
                    u: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(before, after) in [0, 1] (8-bit values): the grid's images by the base model (t = 0, cached) and with
        the selected identity's adapter at raw ``t`` or slider position ``u`` (stored as its setting; neither: the
        stored one) and every other one at its own setting."""
        entry = self.get(key)
        self._move(entry, t, u)
        before, after, _ = self._rows_u8(entry, entry.t)
        return before.float() / 255, after.float() / 255

    def render_grid(self, key: str | None = None, t: float | None = None, *, u: float | None = None) -> Image.Image:
        """The grid image: top row t = 0 (the base model), bottom row at the setting; target views left, retained
        right."""
        return self.view(key, t, u=u)[0]

    def view(self, key: str | None = None, t: float | None = None, *,
             u: float | None = None) -> tuple[Image.Image, str, float, float]:
        """(grid image, the page's composition text, the u and t they show), made together: another view made at
        the same time (the slider moving while the identity is being selected) cannot mix another setting into
        them. ``t`` / ``u``: a new setting to store first (see ``render_rows``)."""
        with self._view_lock:
            entry = self.get(key)
            self._move(entry, t, u)
            u = entry.u
            t = entry.t_at(u)
            before, after, _ = self._rows_u8(entry, t)
            grid = self.compose_grid(before, after, entry, self.composition_footer(entry))
            return grid, self.composition_text(entry), u, t

    # -- the model: every forgotten identity of the session applied (adapters/request_log.py) ---------------------
    def request_log(self) -> RequestLog:
        """The session's forgotten identities as deletion requests, in the order they were added, each at its own
        slider position: the model the session deploys is the base with this log applied."""
        with self._lock:
            log = RequestLog.for_model(self.res.base)
            for e in self.entries.values():
                if e.ready:
                    log.add(e.adapter, e.name, e.u, key=e.key)
            return log

    def model_render(self, latents: torch.Tensor, views: torch.Tensor, log: RequestLog | None = None) -> torch.Tensor:
        """uint8 renders of any latents by the model with every request applied (routed: about one adapter's cost
        however many requests there are); ``log``: the requests (default: the session's now)."""
        log = log if log is not None else self.request_log()
        with torch.inference_mode(), log.active(self.res.base):
            return quantize(self.res.base.render(latents, views))

    def model_signature(self) -> tuple:
        """What the model is made of: each request's key, adapter and t (equal signatures, equal model views)."""
        with self._lock:
            return tuple((e.key, id(e.adapter), round(e.t, 6)) for e in self.entries.values() if e.ready)

    def model_rows(self) -> tuple[torch.Tensor, torch.Tensor, list[Entry | None]]:
        """uint8 (before, after, who) of the "model" view: each forgotten identity with a face (its inverted view),
        then the others (``Resources.model_others``; None in ``who``), by the base model and by the model."""
        with self._lock:
            shown = [e for e in self.entries.values() if e.ready and e.latent is not None]
            signature = self.model_signature()
            cached = self._model_cache
            log = self.request_log()
        others, other_views, others_base = self.res.model_others
        who: list[Entry | None] = [*shown, *[None] * len(others)]
        before = torch.cat([*(e._base_target[:1] for e in shown), others_base])
        if cached is not None and cached[0] == signature:
            return before, cached[1], who
        latents = torch.cat([*(e.latent for e in shown), others])
        views = torch.cat([*(e.view for e in shown), other_views])
        after = self.model_render(latents, views, log)
        with self._lock:
            self._model_cache = (signature, after)
        return before, after, who

    def model_view(self) -> Image.Image:
        """The "model" view: what the deployed model draws with every forgotten identity applied, beside what the
        base model drew, for the forgotten identities and a few others (``serving.model_view``)."""
        before, after, who = self.model_rows()
        n_forgotten = sum(e is not None for e in who)
        labels = [label_of(e.key, e.name, e.u, e.t) for e in who[:n_forgotten]]
        labels += [label_of("", f"other {i + 1}", None, None) for i in range(len(who) - n_forgotten)]
        return compose_model_grid(before, after, labels, n_forgotten)

    def requests(self) -> list[dict]:
        """The session's identities as a table of requests, in order: key, name, status, slider position u and
        its t, and the judge's figures at u from its curve (None until measured)."""
        with self._lock:
            entries, task = list(self.entries.values()), self.task
        rows = []
        for e in entries:
            running = task is not None and task.entry is e and not task.done
            if running:
                status = {"queued": "waiting for the server", "evaluating": "measuring its curve"}.get(task.state,
                                                                                                       task.state)
            elif e.ready:
                status = "forgotten" if e.steps else "forgotten (restored adapter)"
            elif task is not None and task.entry is e and task.state in ("cancelled", "failed"):
                status = f"not forgotten ({task.state})"
            else:
                status = "not forgotten yet"
            u = e.u if e.ready else None
            same, kept = judge_at(e.curve, e.u) if e.ready else (None, None)
            rows.append({"key": e.key, "name": e.name, "status": status, "u": u,
                         "t": e.t_at(u) if u is not None else None, "same": same, "kept": kept,
                         "threshold": e.curve["threshold"] if e.curve is not None else None})
        return rows

    # -- background prefill of the slider's positions -------------------------------------------------------------
    def slider_values(self, entry: Entry) -> list[float]:
        """The t's the page's slider reaches for ``entry`` (what ``prefill`` renders): its positions u, each
        through the adapter's dial; in the raw-t view, t itself in steps of ``slider_step``."""
        step = self.slider_step
        if self.raw_t:
            t_max = entry.t_max
            return [round(min(k * step, t_max), 6) for k in range(math.ceil(t_max / step - 1e-6) + 1)]
        # positions as the page sends them (0.35, not 0.35000000000000003), so that a render finds its prefill
        return [entry.t_at(round(min(k * step, 1.0), 6)) for k in range(math.ceil(1 / step - 1e-6) + 1)]

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
                time.sleep(0.005)  # yield the CPU to an interactive render between two prefills
            self.prefill_done = not self._prefill_wake.is_set()

    def compose_grid(self, before: torch.Tensor, after: torch.Tensor, entry: Entry, footer: str = "") -> Image.Image:
        """uint8 rows (N, 3, 64, 64) -> the labelled grid image (``serving.grid.compose_grid``)."""
        return compose_grid(before, after, entry, footer)

    def curve(self, key: str | None = None) -> dict | None:
        """ID_target and retention at evenly spaced slider positions u with the t each maps to (computed once when
        the adapter became ready, ``metrics.forgetting_curve``), plus the current u and t."""
        entry = self.get(key)
        if entry.curve is None:
            return None
        u = entry.u
        return {**entry.curve, "current_u": u, "current_t": entry.t_at(u), "name": entry.name}

    # -- this session's files (serving.session_folder) -------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """This session's folder, None before the first file (and after ``close``)."""
        return self.session_files.folder

    def files(self) -> list[Path]:
        """Every file this session has on disk now."""
        return self.session_files.files()

    def publish(self, image: Image.Image, kind: str, fmt: str = "png") -> Path:
        """Write an image the page shows (``kind``: grid, preview, ...) into this session's folder; only the last
        ``KEEP_FILES`` of each kind are kept."""
        return self.session_files.publish(image, kind, fmt)

    def entry_image(self, entry: Entry, kind: str, image: Image.Image) -> Path:
        """The file of one of ``entry``'s fixed images (its source crop, its inversion); removed with the entry."""
        return self.session_files.fixed_image(kind, entry.key, image)

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
            saved = entry.adapter.save(self.session_files.path() / f"legato-adapter-{stem}-{entry.key}.safetensors")
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
            self._model_cache = None
            self.ui.clear()
            self.session_files.remove()
            self._prefill_wake.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for this session's background threads (after ``close``)."""
        threads = self._threads if self.closed else [self.task.thread if self.task is not None else None,
                                                     self._prefill_thread]
        for thread in threads:
            if thread is not None and thread.is_alive():
                thread.join(timeout)


__all__ = ["EXAMPLE_IDS", "JOB_QUEUE", "JOB_TIMES", "MAX_FACE_ID", "MIN_FACE_ID", "BusyError", "Entry",
           "ForgetTask", "ImageError", "JobQueue", "JobStatus", "JobTimes", "Resources", "Studio", "StudioError",
           "forgetting_curve", "get_resources", "set_resources"]
