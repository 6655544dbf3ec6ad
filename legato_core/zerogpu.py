"""``spaces.GPU`` where the ``spaces`` package exists (Hugging Face ZeroGPU Spaces), a plain call elsewhere.

On a ZeroGPU Space a GPU is attached only while a function decorated with ``spaces.GPU`` runs; everywhere else the
package is absent and the decorator must cost nothing. ``spaces`` is looked up when a function is decorated, so a
test can install a fake module and decorate a function of its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def spaces_gpu(duration: int | None = None) -> Callable[[F], F] | None:
    """``spaces.GPU`` (with ``duration`` seconds when given) if the package imports, else None."""
    try:
        spaces = importlib.import_module("spaces")
    except ImportError:
        return None
    decorator = getattr(spaces, "GPU", None)
    if decorator is None:
        return None
    return decorator(duration=duration) if duration is not None else decorator


def gpu(fn: F | None = None, *, duration: int | None = None):
    """Decorate GPU work: ``@gpu`` or ``@gpu(duration=120)``: ``spaces.GPU`` when the package imports at decoration
    time (ZeroGPU wants its functions registered when the app's modules load), else ``fn`` unchanged."""

    def wrap(f: F) -> F:
        deco = spaces_gpu(duration)
        return deco(f) if deco is not None else f

    return wrap(fn) if fn is not None else wrap
