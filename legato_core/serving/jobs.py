"""One forget job, run by its own worker thread: queue slot -> train -> forgetting curve -> hand-over."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..adapters import ODEAdapter, active
from ..metrics import forgetting_curve
from ..unlearning.engine import Cancelled, ForgetConfig, ProgressEvent, train_adapter
from .queue import JOB_TIMES, JobQueue, JobTimes, format_duration
from .resources import Resources
from .step_clock import StepClock

if TYPE_CHECKING:
    from ..studio import Entry


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
                when = f"yours should start in {format_duration(self.queue_wait)}"
            else:
                when = "an estimate follows once the job ahead has made some progress"
            return (f"Waiting for the server: {place} ({self.max_jobs} {who} at a time, "
                    f"{self.queue_running} running now); {when}.")
        if self.state == "training":
            if self.step == 0:
                return f"Forgetting {self.name}: starting…"
            eta = f" · {format_duration(self.eta)} left" if self.eta is not None else " · measuring its speed"
            return f"Forgetting {self.name}: step {self.step}/{self.steps} · {self.elapsed:.1f} s{eta}"
        if self.state == "evaluating":
            return f"Forgetting {self.name}: measuring the forgetting curve with the judge network…"
        if self.state == "done":
            if self.steps:
                return (f"Done: {self.name} forgotten in {self.elapsed:.1f} s ({self.steps} steps"
                        f"{f', training {self.train_seconds:.1f} s' if self.train_seconds else ''}). "
                        "Move the forgetting slider.")
            return f"Restored the adapter for {self.name}. Move the forgetting slider."
        if self.state == "cancelled":
            at = f" at step {self.step}/{self.steps}" if self.step else ""
            return f"Cancelled{at}. Nothing was changed; earlier identities are untouched."
        return f"Failed: {self.error}. Earlier identities are untouched."


class ForgetTask:
    """One job, run by its own worker thread: waits for a queue slot, trains (unless an adapter is given) by calling
    the engine directly, measures the curve, then calls ``on_done``."""

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
        self.restored = adapter is not None  # an adapter from a file: nothing is trained here
        self.events: list[ProgressEvent] = []
        self.preview: torch.Tensor | None = None
        self._stop = threading.Event()
        self._t0 = time.time()
        self.clock = StepClock()  # this run's measured speed, for its time left
        self.train_seconds: float | None = None
        self.seconds: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"legato-task-{self.id}")

    def start(self) -> ForgetTask:
        self.thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()  # the engine checks it between steps, the curve between points

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    def _on_progress(self, ev: ProgressEvent) -> None:
        # runs in this task's thread between steps: a preview of the adapter as it stands, at t = T
        self.clock.step(ev.step)
        self.events.append(ev)
        if ev.step % self.preview_every == 0 or ev.step in (1, ev.steps):
            backend = self.res.base
            with torch.no_grad(), active(backend, [(ev.adapter, self.config.ode.t_end)]):
                self.preview = backend.render(self.entry.latent, self.entry.view)[0]

    def _run(self) -> None:
        try:
            if not self.queue.acquire(self, self._stop.is_set):
                self.state = "cancelled"
                return
            try:
                self._t0 = time.time()
                self.clock.start()
                backend = self.res.base
                if self.adapter is None:
                    self.state = "training"
                    try:
                        result = train_adapter(backend, self.entry.latent, self.config, self._on_progress,
                                               self._stop.is_set)
                    except Cancelled:
                        self.state = "cancelled"
                        return
                    self.adapter = result.adapter
                    self.train_seconds = result.seconds
                    self.times.record(steps=self.config.steps, train_seconds=self.train_seconds,
                                      step_seconds=self.clock.per_step, setup_seconds=self.clock.setup_seconds)
                judge = self.res.judge
                if judge is not None:  # None: a diffusers backend without an insightface pack, so no curve
                    self.state = "evaluating"
                    self._eval_t0 = time.time()
                    views = self.curve_views if self.res.base.has_views else 1  # DDIM from x_T has no views
                    self.curve = forgetting_curve(backend, self.adapter, self.entry.latent, judge,
                                                  self.res.curve_retained_latents, views, should_stop=self._stop.is_set)
                    self.times.record(curve_seconds=time.time() - self._eval_t0)
                self.seconds = time.time() - self._t0
                self.on_done(self)
                self.state = "done"
            finally:
                self.queue.release(self)
        except InterruptedError:
            self.state = "cancelled"
        except Exception as e:  # reported to the person, never raised into the UI thread
            self.error = f"{type(e).__name__}: {e}"
            self.state = "failed"

    def expected_remaining(self) -> float | None:
        """Seconds this task still needs (training, then its curve): from this run's measured speed once it has
        one, else from earlier runs on this server; None when nothing has been measured yet."""
        if self.done:
            return 0.0
        curve = self.times.curve_seconds if self.res.has_judge else 0.0
        per_step = self.clock.per_step
        if self.state == "evaluating":
            if curve is None:  # no curve measured yet on this server: reckoned as 20 measured training steps
                curve = 20 * (per_step or self.times.step_seconds or 0.0) or None
            return None if curve is None else max(curve - (time.time() - (self._eval_t0 or time.time())), 1.0)
        steps = self.config.steps if self.config is not None else 0
        if per_step is not None:
            train = self.clock.remaining(steps)
        else:
            per_step = self.times.step_seconds
            if per_step is None and steps:
                return None
            done = self.events[-1].step if self.events else 0
            setup = 0.0 if self.state != "queued" else (self.times.setup_seconds or 0.0)
            train = setup + (steps - done) * (per_step or 0.0)
        if curve is None:  # no curve measured yet on this server: reckoned as 20 measured training steps
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
        ev = self.events[-1] if self.events else None
        if ev is not None:
            st.step, st.steps, st.eta = ev.step, ev.steps, self.clock.remaining(ev.steps)
            st.losses = [e.losses for e in list(self.events)]
        if self.state != "queued":
            st.elapsed = self.seconds if self.seconds is not None else time.time() - self._t0
        if self.state == "done" and self.restored:
            st.steps = 0  # restored from a file, not trained here
        return st
