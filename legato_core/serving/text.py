"""The sentences the page shows about what the bottom row of the grid applies (composition of adapters), and what
the slider's steps mean for an identity's adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..adapters import ODEAdapter


class _Shown(Protocol):
    key: str
    name: str
    u: float  # the slider position
    t: float  # the ODE time it stands for

    @property
    def ready(self) -> bool: ...


def at_t(entry: _Shown) -> str:
    """"2 · Ada at u = 0.50 (t = 0.93)": the slider position and its ODE time (keys: two uploads may share a
    name), or "(not forgotten yet)"."""
    if entry.ready:
        return f"{entry.key} · {entry.name} at u = {entry.u:.2f} (t = {entry.t:.2f})"
    return f"{entry.key} · {entry.name} (not forgotten yet)"


def listing(entries: list[_Shown]) -> str:
    """"a", "a and b", "a, b and c"."""
    names = [at_t(e) for e in entries]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def composition_footer(entry: _Shown, applied: list[_Shown]) -> str:
    """The line under a composed grid's rows ("" when no other adapter acts), so that a composed grid says so
    wherever it is shown or saved."""
    return f"Bottom row: {at_t(entry)}, composed with {listing(applied)}." if applied else ""


def composition_text(entry: _Shown, applied: list[_Shown], compose: bool, others_ready: int) -> str:
    """One or two plain sentences on what the bottom row applies ("" when there is nothing to say: no other
    forgotten identity in the session). ``others_ready``: the session's other forgotten identities."""
    own = at_t(entry)
    if applied:
        return (f"Composition is on: the bottom row applies {own} together with {listing(applied)}. Each identity "
                "keeps its own setting; select one to change it.")
    if compose and others_ready:
        return f"Composition is on, but every other forgotten identity is at t = 0: the bottom row is {own} alone."
    if others_ready:
        n = others_ready
        return (f"Bottom row: {own} alone; composition is off, so the {n} other forgotten "
                f"identit{'y' if n == 1 else 'ies'} of this session {'is' if n == 1 else 'are'} not applied.")
    return ""


def dial_note(adapter: ODEAdapter | None) -> str:
    """What the forgetting slider's steps are for this adapter: calibrated, or the raw knob (an adapter file from
    before dial maps, or a backend that is not calibrated). "" before there is an adapter."""
    if adapter is None:
        return ""
    if adapter.dial is None:
        return ("this adapter has no calibrated dial (an older file, or a backend that is not calibrated), so the "
                f"slider is the raw knob t = u × {adapter.config.t_max:g}: its equal steps need not take equal steps "
                "away from the person")
    return f"calibrated for this adapter after training, measured by the {adapter.dial.measured_by}"
