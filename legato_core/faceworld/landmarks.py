"""Where the small features of a face-world picture are: the ground truth a generator's layout head learns.

Eyes, irises, brows, nose, mouth, mole and cheeks cover a few pixels each at 64 px; a convolutional generator
that must discover their positions from an identity code learns them very slowly (the mean skin colour is a
good L1 answer). The face world knows them exactly, so training can supervise a small network that predicts
them from (identity latent, view); the renders never call this module.

Coordinates are in the generator's face frame: the image frame with roll, scale and shift undone (what
``generator.modeling.face_frame_xy`` gives for every pixel), so the head centre sits at (0, HEAD_CENTER_Y).
"""

from __future__ import annotations

import torch

from .renderer import HEAD_CENTER_Y, project_feature

LANDMARKS = ("eye_left", "eye_right", "iris_left", "iris_right", "brow_left", "brow_right", "nose_tip",
             "mouth", "mole", "cheek_left", "cheek_right")


def face_landmarks(identity: dict[str, torch.Tensor], view: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, len(LANDMARKS), 2) face-frame (x, y) of each landmark, as ``render_faces`` places the parts."""
    c = {k: v.float().view(-1, 1) for k, v in {**identity, **view}.items() if v.dim() == 1}
    hw, hh, yaw, pitch = c["head_w"], c["head_h"], c["yaw"], c["pitch"]
    syaw = torch.sin(yaw)
    e_sp, e_y, e_size = c["eye_spacing"], c["eye_y"], c["eye_size"]
    zero = torch.zeros_like(hw)
    points: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, side in (("left", -1.0), ("right", 1.0)):
        ex, ey, _, fx = project_feature(side * e_sp, e_y, 0.0, hw, hh, yaw, pitch)
        points[f"eye_{name}"] = (ex, ey)
        points[f"iris_{name}"] = (ex + (c["gaze"] * 0.35 + syaw * 0.6) * e_size * fx, ey)
        brow_w, tilt = c["brow_len"], c["brow_tilt"] * c["brow_len"]
        by = ey - e_size * c["eye_aspect"] - 0.045 - c["brow_raise"]
        ax_, bx_ = ex - side * brow_w * fx * 0.7, ex + side * brow_w * fx
        points[f"brow_{name}"] = ((ax_ + bx_) / 2, by + (tilt * 0.3 - tilt) / 2)
        points[f"cheek_{name}"] = project_feature(side * e_sp * 1.15, c["mouth_y"] - 0.12, 0.0, hw, hh, yaw,
                                                  pitch)[:2]
    points["nose_tip"] = project_feature(zero, e_y + 0.04 + c["nose_len"], 0.07, hw, hh, yaw, pitch)[:2]
    points["mouth"] = project_feature(zero, c["mouth_y"], 0.0, hw, hh, yaw, pitch)[:2]
    points["mole"] = project_feature(c["mole_x"], c["mole_y"], 0.0, hw, hh, yaw, pitch)[:2]
    xy = torch.stack([torch.cat(points[n], dim=1) for n in LANDMARKS], dim=1)
    return xy + torch.tensor([0.0, HEAD_CENTER_Y], device=xy.device)
