"""A training run's speed, measured as it runs, for the page's time estimates."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class StepClock:
    """Seconds per step of one run, from the steps after the first: the first carries the run's set-up, and an
    estimate made from it alone was twelve times too long ("about 975 s left" for an 80 s job)."""

    def __init__(self, window: int = 20, min_intervals: int = 2, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._marks: deque[tuple[int, float]] = deque(maxlen=window + 1)
        self.min_intervals = min_intervals
        self.started = clock()
        self.first_step_seconds: float | None = None  # set-up and the first step together

    def start(self) -> None:
        """The run begins now (after its queue wait)."""
        self.started = self._clock()
        self._marks.clear()
        self.first_step_seconds = None

    def step(self, step: int) -> None:
        """Step ``step`` (1-based) has just ended."""
        now = self._clock()
        if self.first_step_seconds is None:
            self.first_step_seconds = now - self.started
        self._marks.append((step, now))

    @property
    def per_step(self) -> float | None:
        """Seconds per step over the recent window; None until ``min_intervals`` steps after the first."""
        if len(self._marks) < self.min_intervals + 1:
            return None
        (s0, t0), (s1, t1) = self._marks[0], self._marks[-1]
        return (t1 - t0) / (s1 - s0)

    @property
    def setup_seconds(self) -> float | None:
        """What the run spent before its steps (the first step's excess over a measured step)."""
        rate = self.per_step
        if rate is None or self.first_step_seconds is None:
            return None
        return max(self.first_step_seconds - rate, 0.0)

    def remaining(self, steps: int) -> float | None:
        """Seconds left to reach ``steps`` at the measured speed; None while it is still being measured."""
        rate = self.per_step
        if rate is None:
            return None
        return rate * max(steps - self._marks[-1][0], 0)
