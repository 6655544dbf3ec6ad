"""Identity and nuisance factors of the procedural face world.

An *identity* is drawn deterministically from an integer id: the same id always gives the same person.
A *view* (nuisance: pose, expression, light, background, framing) is drawn independently per image from
(id, view index), so any identity renders in any number of views.

Both are returned as dicts of float tensors of shape (B,) (colours as (B, 3)), the form the renderer takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

IDENTITY_SALT = 0x1E6A70
VIEW_SALT = 0x51E7

HAIR_STYLES = ("bald", "crop", "long", "bun", "side-part", "afro", "mohawk")
FACIAL_HAIR = ("none", "moustache", "beard", "goatee")
GLASSES = ("none", "round", "square")

# Skin tones from light to dark (RGB in [0, 1]); a person's tone is a blend of two neighbours plus jitter.
_SKIN = np.array(
    [[0.98, 0.85, 0.74], [0.93, 0.76, 0.62], [0.84, 0.64, 0.48], [0.70, 0.50, 0.35], [0.52, 0.35, 0.23],
     [0.36, 0.24, 0.16]]
)
_IRIS = np.array(
    [[0.35, 0.20, 0.08], [0.20, 0.45, 0.80], [0.25, 0.55, 0.30], [0.50, 0.55, 0.60], [0.55, 0.40, 0.15],
     [0.10, 0.08, 0.06]]
)
_HAIR = np.array(
    [[0.08, 0.06, 0.05], [0.30, 0.18, 0.08], [0.55, 0.35, 0.15], [0.85, 0.70, 0.40], [0.65, 0.25, 0.08],
     [0.75, 0.75, 0.75], [0.95, 0.93, 0.88], [0.45, 0.12, 0.35], [0.15, 0.30, 0.60]]
)

IDENTITY_KEYS = (
    "head_w", "head_h", "jaw", "skin", "eye_spacing", "eye_y", "eye_size", "eye_aspect", "iris",
    "brow_thick", "brow_tilt", "brow_len", "brow_color", "nose_len", "nose_w", "mouth_w", "mouth_y",
    "lip_thick", "lip_color", "ear_size", "hair_color", "hair_style", "hairline", "facial_hair",
    "glasses", "glasses_color", "mole", "mole_x", "mole_y", "freckles", "blush",
)



def _check_ids(ids: Sequence[int] | int) -> list[int]:
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        ids = [int(ids)]
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence | np.ndarray):
        raise TypeError(f"identity ids must be an int or a sequence of ints, got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"identity ids must be integers, got {i!r} ({type(i).__name__})")
        if i < 0:
            raise ValueError(f"identity ids must be non-negative, got {i}")
        out.append(int(i))
    if not out:
        raise ValueError("at least one identity id is required")
    return out


def _blend(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
    i = rng.integers(len(palette))
    j = min(len(palette) - 1, max(0, i + rng.choice([-1, 1])))
    a = rng.uniform(0, 1)
    c = palette[i] * (1 - a) + palette[j] * a + rng.normal(0, jitter, 3)
    return np.clip(c, 0.0, 1.0)


def _identity_row(identity: int) -> dict[str, np.ndarray | float]:
    rng = np.random.default_rng([IDENTITY_SALT, identity])
    u = rng.uniform
    hair_color = _blend(rng, _HAIR, 0.04)
    brow_color = np.clip(hair_color * u(0.5, 1.0) + rng.normal(0, 0.03, 3), 0, 1)
    return {
        "head_w": u(0.36, 0.48),
        "head_h": u(0.46, 0.58),
        "jaw": u(0.45, 1.0),
        "skin": _blend(rng, _SKIN, 0.025),
        "eye_spacing": u(0.13, 0.21),
        "eye_y": u(-0.10, 0.02),
        "eye_size": u(0.050, 0.085),
        "eye_aspect": u(0.40, 0.80),
        "iris": _blend(rng, _IRIS, 0.05),
        "brow_thick": u(0.010, 0.032),
        "brow_tilt": u(-0.35, 0.35),
        "brow_len": u(0.055, 0.110),
        "brow_color": brow_color,
        "nose_len": u(0.08, 0.19),
        "nose_w": u(0.030, 0.075),
        "mouth_w": u(0.07, 0.16),
        "mouth_y": u(0.24, 0.33),
        "lip_thick": u(0.010, 0.030),
        "lip_color": np.clip(np.array([u(0.55, 0.90), u(0.20, 0.45), u(0.22, 0.45)]), 0, 1),
        "ear_size": u(0.05, 0.10),
        "hair_color": hair_color,
        "hair_style": float(rng.integers(len(HAIR_STYLES))),
        "hairline": u(-0.42, -0.22),
        "facial_hair": float(rng.choice(len(FACIAL_HAIR), p=[0.55, 0.15, 0.18, 0.12])),
        "glasses": float(rng.choice(len(GLASSES), p=[0.6, 0.2, 0.2])),
        "glasses_color": np.clip(np.array([u(0, 0.8), u(0, 0.6), u(0, 0.6)]), 0, 1),
        "mole": float(rng.uniform() < 0.35),
        "mole_x": u(-0.25, 0.25),
        "mole_y": u(0.02, 0.28),
        "freckles": float(rng.uniform() < 0.25) * u(0.4, 1.0),
        "blush": u(0.0, 0.6),
    }


# Nuisance factors: name -> (low, high, dims). Each is uniform on its range; a view is a point of [-1, 1]^D.
_DEG = np.pi / 180
VIEW_RANGES: dict[str, tuple[float, float, int]] = {
    "yaw": (-25 * _DEG, 25 * _DEG, 1),
    "pitch": (-20 * _DEG, 20 * _DEG, 1),
    "roll": (-20 * _DEG, 20 * _DEG, 1),
    "smile": (-0.4, 1.0, 1),
    "eye_open": (0.25, 1.25, 1),  # clipped at 1: a quarter of views have fully open eyes
    "brow_raise": (-0.015, 0.035, 1),
    "light_azimuth": (-1.0, 1.0, 1),
    "light_elevation": (-0.4, 0.8, 1),
    "light_strength": (0.15, 0.55, 1),
    "ambient": (0.85, 1.1, 1),
    "background": (0.1, 0.95, 3),
    "background_tint": (-0.25, 0.25, 1),
    "clothes": (0.05, 0.9, 3),
    "scale": (1.0, 1.2, 1),
    "shift_x": (-0.07, 0.07, 1),
    "shift_y": (-0.06, 0.06, 1),
    "gaze": (-0.5, 0.5, 1),
}
VIEW_DIM = sum(d for _, _, d in VIEW_RANGES.values())
VIEW_KEYS = tuple(VIEW_RANGES)


def decode_view(vec: torch.Tensor) -> dict[str, torch.Tensor]:
    """Normalised view vectors (B, VIEW_DIM) in [-1, 1] -> renderer factors."""
    if vec.dim() != 2 or vec.shape[1] != VIEW_DIM:
        raise ValueError(f"view vectors must have shape (B, {VIEW_DIM}), got {tuple(vec.shape)}")
    out, k = {}, 0
    for name, (lo, hi, d) in VIEW_RANGES.items():
        x = lo + (vec[:, k:k + d].clamp(-1, 1) + 1) * 0.5 * (hi - lo)
        out[name] = x if d > 1 else x[:, 0]
        k += d
    out["eye_open"] = out["eye_open"].clamp(max=1.0)
    return out


def encode_view(view: dict[str, torch.Tensor]) -> torch.Tensor:
    """Renderer factors -> normalised view vectors (inverse of :func:`decode_view` up to the eye clip)."""
    cols = []
    for name, (lo, hi, d) in VIEW_RANGES.items():
        x = view[name].float().reshape(len(view[name]), d)
        cols.append((x - lo) / (hi - lo) * 2 - 1)
    return torch.cat(cols, dim=1)


def _view_vector(identity: int, view: int) -> np.ndarray:
    return np.random.default_rng([VIEW_SALT, identity, view]).uniform(-1, 1, VIEW_DIM)


def _stack(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.array([r[k] for r in rows]), dtype=torch.float32) for k in rows[0]}


def sample_identities(ids: Sequence[int] | int) -> dict[str, torch.Tensor]:
    """Identity factors for each id (deterministic)."""
    return _stack([_identity_row(i) for i in _check_ids(ids)])


def sample_views(ids: Sequence[int] | int, views: Sequence[int] | int) -> dict[str, torch.Tensor]:
    """Nuisance factors for each (id, view index) pair; ``views`` broadcasts against ``ids``."""
    ids = _check_ids(ids)
    views = _check_ids(views)
    if len(views) == 1:
        views = views * len(ids)
    if len(ids) == 1:
        ids = ids * len(views)
    if len(ids) != len(views):
        raise ValueError(f"ids and views must have the same length ({len(ids)} != {len(views)})")
    vec = np.stack([_view_vector(i, v) for i, v in zip(ids, views, strict=True)])
    return decode_view(torch.as_tensor(vec, dtype=torch.float32))


def random_view_vectors(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh random views as normalised vectors (the view prior is uniform on [-1, 1]^D)."""
    return torch.rand(n, VIEW_DIM, generator=generator) * 2 - 1


def frontal_view(n: int) -> dict[str, torch.Tensor]:
    """A neutral, centred, front-lit view for ``n`` faces (used for thumbnails and canonical renders)."""
    z = torch.zeros(n)
    return {
        "yaw": z.clone(), "pitch": z.clone(), "roll": z.clone(), "smile": z + 0.3, "eye_open": z + 1.0,
        "brow_raise": z.clone(), "light_azimuth": z.clone(), "light_elevation": z + 0.3,
        "light_strength": z + 0.3, "ambient": z + 1.0, "background": torch.full((n, 3), 0.8),
        "background_tint": z.clone(), "clothes": torch.tensor([[0.3, 0.35, 0.45]]).repeat(n, 1),
        "scale": z + 1.1, "shift_x": z.clone(), "shift_y": z.clone(), "gaze": z.clone(),
    }
