"""Face alignment: a similarity transform (rotation, uniform scale, shift) that takes five detected landmarks onto
a backend's template, and the warp that crops the photo with it.

Templates (landmark order of :mod:`.detection`: image-left eye, image-right eye, nose tip, mouth corners):

- ArcFace's 112 x 112 template (insightface), scaled to the crop size: the framing insightface recognisers and
  Arc2Face were trained on.
- The face world's template: where a frontal face-world render puts those five points, computed from the
  renderer's geometry (``legato_core.faceworld.renderer``: face frame, head centre, the frontal view's scale)
  averaged over face-world identities. A real photo aligned to it is framed like the embedded generator's faces.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

# insightface's 5-point ArcFace template for a 112 x 112 crop (pixel coordinates, as insightface uses them)
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
FACEWORLD_TEMPLATE_IDS = range(0, 2000)  # identities averaged for the face world's canonical landmarks


@functools.lru_cache(maxsize=1)
def _faceworld_template_unit() -> np.ndarray:
    """The five landmarks of a frontal face-world render in [-1, 1] image coordinates (mean identity)."""
    from ..faceworld import frontal_view, sample_identities
    from ..faceworld.renderer import HEAD_CENTER_Y

    ident = sample_identities(list(FACEWORLD_TEMPLATE_IDS))
    view = frontal_view(1)
    eye_x, eye_y = ident["eye_spacing"].mean().item(), ident["eye_y"].mean().item()
    nose_y = eye_y + 0.04 + ident["nose_len"].mean().item()  # the renderer's nose tip (frontal: no projection)
    mouth_w = ident["mouth_w"].mean().item()
    # the lips' centre line bends by smile * 0.045 * (dx / mouth_w)^2: the corners sit that much higher
    mouth_y = ident["mouth_y"].mean().item() - view["smile"].item() * 0.045
    face = np.array([[-eye_x, eye_y], [eye_x, eye_y], [0.0, nose_y], [-mouth_w, mouth_y], [mouth_w, mouth_y]])
    scale = view["scale"].item()
    # face frame -> image: y had the head centre subtracted; then scale and shift (frontal: no roll, no shift)
    return np.stack([face[:, 0] * scale + view["shift_x"].item(),
                     (face[:, 1] + HEAD_CENTER_Y) * scale + view["shift_y"].item()], 1).astype(np.float32)


def faceworld_template(size: int = 64) -> np.ndarray:
    """The face world's five landmarks in pixels of a ``size`` x ``size`` render (pixel centres at i + 0.5)."""
    return (_faceworld_template_unit() + 1) / 2 * size


def arcface_template(size: int = 112) -> np.ndarray:
    """ArcFace's template scaled to a ``size`` x ``size`` crop (pixel centres at i + 0.5)."""
    return (ARCFACE_TEMPLATE_112 + 0.5) * (size / 112.0)  # insightface's coordinates put pixel centres at i


@dataclass(frozen=True)
class FaceCrop:
    """How a backend wants its faces: a square crop of ``size`` px with the five landmarks at ``template``.

    ``detector`` finds the faces for this crop (None: the offline MTCNN); a backend whose identity network has its
    own detector passes it, so an upload is detected once. ``as_is=False`` always aligns on a detected face (a
    face-world-style square without one is refused), for backends that embed the crop itself.
    """

    size: int
    template: np.ndarray  # (5, 2) in crop pixels
    name: str
    detector: object | None = field(default=None, compare=False, repr=False)  # ``detect(photo)`` -> faces
    as_is: bool = True

    @classmethod
    def faceworld(cls, size: int = 64) -> FaceCrop:
        return cls(size, faceworld_template(size), "face-world framing")

    @classmethod
    def arcface(cls, size: int = 112, detector: object | None = None, as_is: bool = True) -> FaceCrop:
        return cls(size, arcface_template(size), "ArcFace template", detector, as_is)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping points ``src`` (N, 2) onto ``dst`` (N, 2).

    Returns a 2 x 3 matrix ``M`` with ``dst ~= src @ M[:, :2].T + M[:, 2]``."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (N >= 2, 2) point sets of the same shape, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s ** 2).sum() / len(src)
    if var <= 1e-12:
        raise ValueError("the landmarks coincide: no transform can be estimated")
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ fix @ vt
    scale = (sig * np.diag(fix)).sum() / var
    a = scale * rot
    return np.hstack([a, (mu_d - a @ mu_s)[:, None]]).astype(np.float64)


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 transform to points (N, 2)."""
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


def transform_scale(m: np.ndarray) -> float:
    """Uniform scale of a similarity transform (output px per input px)."""
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def transform_rotation_deg(m: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))


def warp(image: torch.Tensor, m: np.ndarray, size: int) -> torch.Tensor:
    """Crop (3, H, W) in [0, 1] through the 2 x 3 transform ``m`` (input px -> output px) into (3, size, size).

    Downscaling is anti-aliased: the photo is first resized (area average) to about the output's resolution, so a
    300-px face does not alias into a 64-px crop. Outside the photo: edge pixels repeat (no black borders)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image (3, H, W), got {tuple(image.shape)}")
    m = np.asarray(m, np.float64)
    s = transform_scale(m)
    if s < 0.5:  # pre-shrink so that grid_sample's bilinear taps stay about one pixel apart
        h, w = image.shape[1:]
        nh, nw = max(1, round(h * s * 1.5)), max(1, round(w * s * 1.5))
        image = F.interpolate(image[None], size=(nh, nw), mode="area")[0]
        m = m @ np.diag([w / nw, h / nh, 1.0])  # new px -> old px, then old px -> output
    h, w = image.shape[1:]
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))  # output px -> input px
    # normalised output coords [-1, 1] -> output px -> input px -> normalised input coords (align_corners=False)
    out_to_px = np.array([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1]])
    px_to_in = np.array([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])
    theta = torch.tensor((px_to_in @ inv @ out_to_px)[:2], dtype=torch.float32)[None]
    grid = F.affine_grid(theta, [1, 3, size, size], align_corners=False)
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0].clamp(0, 1)


def align_face(image: torch.Tensor, landmarks: np.ndarray, crop: FaceCrop) -> tuple[torch.Tensor, np.ndarray]:
    """Align one face: (crop (3, S, S), the 2 x 3 transform photo px -> crop px)."""
    m = similarity_transform(landmarks, crop.template)
    return warp(image, m, crop.size), m
