"""The server-wide job queue (at most ``max_jobs`` trainings at once, FIFO, positions and wait estimates)."""

from __future__ import annotations

import threading
from collections.abc import Callable


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
    """Server-wide running averages of a training step, a run's set-up and a forgetting curve, measured on this
    machine, for the queue's time estimates (exponential moving averages; nothing until a job has run)."""

    def __init__(self, weight: float = 0.3):
        self._lock = threading.Lock()
        self.weight = weight
        self.step_seconds: float | None = None
        self.setup_seconds: float | None = None
        self.curve_seconds: float | None = None

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.weight) * old + self.weight * new

    def record(self, steps: int | None = None, train_seconds: float | None = None,
               curve_seconds: float | None = None, step_seconds: float | None = None,
               setup_seconds: float | None = None) -> None:
        """A finished run: its measured ``step_seconds`` (``StepClock``), else ``train_seconds / steps``."""
        with self._lock:
            if step_seconds is not None:
                self.step_seconds = self._mix(self.step_seconds, step_seconds)
            elif steps and train_seconds is not None:
                self.step_seconds = self._mix(self.step_seconds, train_seconds / steps)
            if setup_seconds is not None:
                self.setup_seconds = self._mix(self.setup_seconds, setup_seconds)
            if curve_seconds is not None:
                self.curve_seconds = self._mix(self.curve_seconds, curve_seconds)


JOB_TIMES = JobTimes()


def format_duration(seconds: float) -> str:
    """42 -> "about 45 s", 130 -> "about 2 min 10 s", 3700 -> "about 62 min"."""
    if seconds < 60:
        return f"about {max(5, 5 * round(seconds / 5))} s"
    minutes, rest = divmod(int(10 * round(seconds / 10)), 60)
    return f"about {minutes} min" + (f" {rest} s" if rest and minutes < 10 else "")
