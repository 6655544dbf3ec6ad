"""Which adapters run, and at what intensity: a value scoped to a ``with`` block, read by permanent site hooks.

Nothing about "what is active" is stored on the adapters or the base model. ``active(model, [(adapter, t)])``
sets a context variable for the block; the hooks that :func:`install_site_hooks` puts once on each adapter site
read it on every forward. Context variables are per thread, so two threads (two users, or a training job and a
slider) can render different adapters at different intensities on one base at the same time, and an exception
can never leave an adapter switched on.

    with active(backend, [(adapter, 0.8)]):
        images = backend.render(latents, views)
    with active(backend, []):                       # the base model, whatever the enclosing block says
        original = backend.render(latents, views)
    with active(backend, [(adapter, 1.6)], record=True) as states:
        images = backend.synthesize(latents, views)  # states[site] = the solver's states s_0 .. s_K
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .adapter import AdaptableModel


class SiteAdapter(Protocol):
    """What activation needs of an adapter (``ODEAdapter``, ``LowRankAdapter``): per-site modules in ``fields``,
    a transform of one site's output at an intensity, a range check and a base check."""

    fields: nn.ModuleDict

    def transform(self, site: str, x: torch.Tensor, intensity: float,
                  states: dict[str, list[torch.Tensor]] | None = None) -> torch.Tensor: ...

    def check_intensity(self, t: float) -> float: ...

    def check_base(self, model: AdaptableModel) -> None: ...


@dataclass(frozen=True)
class Activation:
    adapter: SiteAdapter
    intensity: float
    states: dict[str, list[torch.Tensor]] | None  # where the solver's states go, when recording


_ACTIVE: ContextVar[tuple[Activation, ...]] = ContextVar("legato_active_adapters", default=())
_HOOKED = "_legato_site_hook"


def _run_active(site: str, _module: nn.Module, _inputs, output):
    acts = _ACTIVE.get()
    if not acts:
        return None  # the base model's output, untouched
    x = output
    for act in acts:
        if site in act.adapter.fields:
            x = act.adapter.transform(site, x, act.intensity, act.states)
    return x


def install_site_hooks(model: AdaptableModel) -> None:
    """Put one permanent hook on each adapter site (idempotent). With no active adapters it returns the site's
    output as is, so the base model is unchanged."""
    for name, module in model.adapter_sites.items():
        if getattr(module, _HOOKED, None) != name:
            module.register_forward_hook(lambda m, i, o, _site=name: _run_active(_site, m, i, o))
            setattr(module, _HOOKED, name)


def active_adapters() -> tuple[Activation, ...]:
    """What runs in this context right now (empty: the base model)."""
    return _ACTIVE.get()


@contextmanager
def active(model: AdaptableModel, adapters: Iterable[tuple[SiteAdapter, float]],
           record: bool = False) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Run exactly ``adapters`` (each at its intensity) on ``model`` inside the block, in this thread only.

    Each adapter is checked against the model (sites, channels, weight hash) and must have its intensity in
    [0, t_max]. With ``record`` the block yields a dict that fills with each site's solver states.
    """
    states: dict[str, list[torch.Tensor]] = {}
    acts = []
    for adapter, t in adapters:
        adapter.check_base(model)
        model.prepare_adapter(adapter)
        if hasattr(adapter, "bind"):  # a gated adapter reads identities from this model (adapters/gate.py)
            adapter.bind(model)
        acts.append(Activation(adapter, adapter.check_intensity(t), states if record else None))
    install_site_hooks(model)
    token = _ACTIVE.set(tuple(acts))
    try:
        yield states
    finally:
        _ACTIVE.reset(token)
