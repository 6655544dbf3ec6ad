"""legato: continuous identity unlearning for generative models with Neural-ODE adapters (LEGATO).

The data path, one module per step: ``images`` (image in) -> ``identity`` (who is it) ->
``unlearning.targets`` (what they become) -> ``unlearning.engine`` (adapter training) ->
``adapters`` (t-parameterised render) -> ``metrics`` (judged by a separate network).
"""

from __future__ import annotations

__version__ = "0.1.0"


def forget(backend, image_or_latent, config=None, on_progress=None):
    """Forget one identity on ``backend``; see :func:`legato_core.unlearning.engine.forget`."""
    from .unlearning.engine import forget as _forget

    return _forget(backend, image_or_latent, config, on_progress)
