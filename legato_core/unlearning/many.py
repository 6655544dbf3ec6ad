"""Forgetting many people: a stream of requests (one run each) or a batch (one run), into one ``RequestLog``.

Each person gets their own adapter, trained on the base model alone and limited to a scope around them
(adapters/scope.py), so a request never retrains or disturbs another and withdrawing one is exact. What a batch
shares is the run: the substitute faces are chosen together (each person their own, never one of the others) from
one rendering of the candidate pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..adapters.request_log import Request, RequestLog
from .engine import ForgetConfig, ProgressEvent, train_adapter
from .targets import make_target

MODES = ("sequential", "batch")


@dataclass
class Person:
    """One deletion request's input: a label (who, in words) and the person's identity latent(s) (1, D)."""

    label: str
    latent: torch.Tensor


@dataclass
class RequestDone:
    """Reported after each request: the request added, its index among this run's and the seconds it took."""

    request: Request
    index: int
    total: int
    seconds: float


def forget_many(backend, people: Sequence[Person], config: ForgetConfig | None = None, mode: str = "sequential",
                log: RequestLog | None = None, on_request: Callable[[RequestDone], None] | None = None,
                on_progress: Callable[[ProgressEvent], None] | None = None, resume_from: int = 0) -> RequestLog:
    """Forget ``people`` into ``log`` (a new one for ``backend`` when None), one adapter per person.

    ``sequential``: one request per person as it arrives (its own target search). ``batch``: one run, the
    substitutes chosen together, distinct, none of them one of the people. ``on_request`` hears of each request as
    it lands (e.g. to save the log). ``resume_from``: the first that many people are already in ``log`` (a stopped
    run); they are skipped, and a batch still chooses all substitutes together, so the rest get the same ones."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 <= resume_from <= len(people):
        raise ValueError(f"resume_from must be between 0 and the {len(people)} people, got {resume_from}")
    config = config or ForgetConfig()
    log = log if log is not None else RequestLog.for_model(backend)
    if resume_from > len(log):
        raise ValueError(f"resume_from={resume_from}, but the log holds only {len(log)} requests")
    targets: list[tuple[torch.Tensor, dict] | None] = [None] * len(people)
    t_batch = time.time()
    if mode == "batch" and people:
        latents = torch.cat([p.latent[:1] for p in people])
        w_target, desc = make_target(backend, latents, config.target, distinct=True)
        for i in range(len(people)):
            row = {k: ([v[i]] if isinstance(v, list) and len(v) == len(people) else v) for k, v in desc.items()}
            targets[i] = (w_target[i:i + 1], row)
    shared = time.time() - t_batch  # the batch's joint target search, spread over its requests
    for i, person in enumerate(people[resume_from:], start=resume_from):
        t0 = time.time()
        result = train_adapter(backend, person.latent, config, on_progress, target=targets[i])
        request = log.add(result.adapter, person.label)
        if on_request is not None:
            on_request(RequestDone(request, i, len(people), time.time() - t0 + shared / len(people)))
    return log
