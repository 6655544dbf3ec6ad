"""What every session shares: the frozen base backend, the retained identities, the judge."""

from __future__ import annotations

import threading

import torch

from .. import faceworld
from ..faces import FaceCrop
from ..ranges import DEVELOPMENT

EXAMPLE_IDS = tuple(range(DEVELOPMENT.start + 1, DEVELOPMENT.start + 9))  # 200_001 .. 200_008
RETAINED_IDS = tuple(range(DEVELOPMENT.start + 101, DEVELOPMENT.start + 105))  # 200_101 .. 200_104


# -- shared, process-wide resources ------------------------------------------------------------------------------
class Resources:
    """The backend(s), the render lock, the fixed retained identities and the lazily loaded judge.

    ``backend``: default the embedded face world. A diffusers backend (arc2face, ddpm) is judged by ``judge``, else
    by its own insightface pack; with neither there is no forgetting curve (the embedded judge only knows 64 x 64
    face-world faces). ``label``: the line the app shows to say which backend is live (default: from the backend).
    """

    def __init__(self, backend=None, retained_ids: tuple[int, ...] = RETAINED_IDS, curve_retained: int = 12,
                 seed: int = 20_260_104, judge=None, label: str | None = None):
        from ..backends.registry import backend_kind, backend_label

        if backend is None:
            from ..backends.embedded import EmbeddedFaceBackend

            backend = EmbeddedFaceBackend.from_pretrained()
        self.base = backend
        self.kind = backend_kind(backend)  # no judge given for a photo model: no curve (never its own networks)
        self.backend_label = label or backend_label(backend)
        self.base.weight_hash()  # computed once here: adapters are checked against it on every render
        gen = torch.Generator().manual_seed(seed)
        if self.face_world:
            # the grid's "retained" column: face-world people (development ids, never trained on), inverted by the
            # encoders alone (~20 ms; refining them hardly changes the render); the curve's retention is measured
            # on random identities from the generator's prior, as in legato_core.metrics
            self.retained_latents, self.retained_views = backend.invert(faceworld.render(list(retained_ids), 0),
                                                                        refine_steps=0)
        else:  # a photo model cannot invert 64 x 64 synthetic faces (insightface finds none): its own prior instead
            self.retained_latents = backend.sample_latents(len(retained_ids), gen)
            self.retained_views = backend.canonical_views(len(retained_ids))
        self.curve_retained_latents = backend.sample_latents(curve_retained, gen)
        self._retained_base: torch.Tensor | None = None
        self._model_others: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._judge = judge
        self._judge_lock = threading.Lock()

    @property
    def face_world(self) -> bool:
        """Whether face-world identities (the examples, "add by id") can be used: only the embedded backend."""
        return bool(self.base.face_world)

    @property
    def image_size(self) -> int:
        """Square size uploads are cropped to: the backend's own (64 embedded, the checkpoint's for diffusers)."""
        return int(self.base.image_size)

    @property
    def face_crop(self) -> FaceCrop:
        """The crop uploads are aligned to: the backend's own."""
        return self.base.face_crop()

    @property
    def has_judge(self) -> bool:
        """Whether jobs measure a forgetting curve (without loading the judge)."""
        return self._judge is not None or self.face_world

    @property
    def judge(self):
        """The network that scores forgetting curves; None for a diffusers backend loaded without an insightface
        pack (no curve then)."""
        with self._judge_lock:
            if self._judge is None and self.face_world:
                from ..identity.model import load_identity_model

                self._judge = load_identity_model("judge")
            return self._judge

    @property
    def model_others(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, views, uint8 base renders) of the people the "model" view shows beside the forgotten ones: the
        retained people and as many random people of the prior (the curve's), whom no request is about."""
        if self._model_others is None:
            n = len(self.retained_latents)
            extra = self.curve_retained_latents[:n]
            latents = torch.cat([self.retained_latents, extra])
            views = torch.cat([self.retained_views, self.base.canonical_views(1).expand(len(extra), -1)])
            with torch.inference_mode():
                self._model_others = (latents, views, quantize(self.base.render(latents, views)))
        return self._model_others

    @property
    def retained_base(self) -> torch.Tensor:
        """uint8 renders of the retained identities by the base model."""
        if self._retained_base is None:
            with torch.inference_mode():
                self._retained_base = quantize(self.base.render(self.retained_latents, self.retained_views))
        return self._retained_base


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 (what the grid shows; caches hold these, 4x smaller than floats)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


_RESOURCES: Resources | None = None
_RESOURCES_LOCK = threading.Lock()


def get_resources() -> Resources:
    """The process-wide resources, loaded on first use (the embedded default unless ``set_resources`` ran)."""
    global _RESOURCES
    with _RESOURCES_LOCK:
        if _RESOURCES is None:
            _RESOURCES = Resources()
        return _RESOURCES


def set_resources(resources: Resources) -> Resources:
    """Install ``resources`` (e.g. built on a backend chosen by the app's flags) as the process-wide ones; sessions
    created afterwards use them."""
    global _RESOURCES
    with _RESOURCES_LOCK:
        _RESOURCES = resources
        return resources
