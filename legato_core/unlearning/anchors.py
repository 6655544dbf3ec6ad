"""More latents of the person to forget: the generator's own renders of them in other views, inverted again.

Inversion is many-to-one: other photos of one person invert to identity latents far from the uploaded photo's
(1.1-2 typical radii on validation ids 100,507-100,521, against a typical |w - w_avg| of 1), far outside the
adjacency neighbourhood the losses sample. Training at these re-inverted latents too teaches the adapter where
*this person's* other photos land, using only the upload and the generator.
"""

from __future__ import annotations

import torch


def view_anchors(backend, w_u: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n latents per row of w_u (B, D): render it in n random views and invert the renders -> (B * n, D)."""
    if n <= 0:
        return w_u[:0]
    views = backend.sample_views(len(w_u) * n, generator)
    with torch.no_grad():
        images = backend.render(w_u.repeat_interleave(n, 0), views)
    return backend.invert(images)[0].detach()


def person_latents(backend, w: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """The upload's latent w (1, D) and its n view anchors, as a forget run with this seed makes them (the anchors
    are its generator's first draws): the centres of that run's scope, made again for a saved adapter."""
    return torch.cat([w, view_anchors(backend, w, n, torch.Generator().manual_seed(seed))])
