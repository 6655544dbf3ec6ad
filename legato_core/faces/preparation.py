"""Face handling for every upload: detect, pick the largest face, align it to the backend's crop, say what happened.

The rules, in order:

1. No face detected: a square image is used as it is (face-world renders and exported crops are square and
   already framed; the detector finds only about half of the drawn faces); any other image is refused with
   :class:`NoFaceError`.
2. The largest face is used; with several, the message says how many and where the one used is.
3. A square image whose largest face already sits where the backend's template puts faces (within the range of
   framings the face world's own views produce: scale, roll and shift) is used as it is, so a face-world render
   gives the same crop whether or not the detector fires on it.
4. A face smaller than ``min_face`` pixels is refused with :class:`TinyFaceError` (its crop would be mostly
   interpolation).
5. Otherwise the face is aligned on its five landmarks (similarity transform) onto the backend's template.

Rules 1 and 3 apply only to crops with ``as_is`` (face-world framing); a backend that embeds the crop itself
(Arc2Face) always gets an aligned face. The detector is the crop's own when it names one (Arc2Face: the pack's
SCRFD, so each upload is detected once, on the original photo).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from .alignment import (
    FaceCrop,
    align_face,
    similarity_transform,
    transform_points,
    transform_rotation_deg,
    transform_scale,
)
from .detection import DetectedFace, FaceDetector, default_detector

MIN_FACE = 40  # px: the smallest face (shorter side of its box) an upload may use
SQUARE_TOLERANCE = 0.02  # |w - h| / max(w, h) below which an image counts as square
# "already framed": measured on 100 face-world renders (views 0, 64 and 256 px) where the detector fires, the
# similarity from their landmarks to the face-world template has scale 0.69-1.27, roll <= 31 deg, centre shift
# <= 0.14 of the side; real photos of the offline set need 2.0-2.8x and shifts of 0.56+
FRAMED_SCALE = (0.6, 1.5)
FRAMED_ROLL_DEG = 35.0
FRAMED_SHIFT = 0.2


class FaceError(ValueError):
    """An upload whose face cannot be used; the message says why and what to do."""


class NoFaceError(FaceError):
    """No face was detected."""


class TinyFaceError(FaceError):
    """The face found is smaller than the minimum size."""


def _where(face: DetectedFace, width: int) -> str:
    cx = (face.box[0] + face.box[2]) / 2 / width
    return "at left" if cx < 1 / 3 else ("at right" if cx > 2 / 3 else "in the centre")


def choice_message(faces: list[DetectedFace], width: int) -> str:
    """Which face is used when there are several (faces largest first), e.g. "3 faces found; using the largest,
    at left."; "" for one face or none."""
    if len(faces) < 2:
        return ""
    return f"{len(faces)} faces found; using the largest, {_where(faces[0], width)}."


@dataclass
class PreparedFace:
    """The result of face handling: the crop a backend gets and what was found on the way."""

    image: torch.Tensor  # (3, S, S) in [0, 1]: what the backend receives
    faces: list[DetectedFace]  # every face detected, largest first
    used: int | None  # index into ``faces`` of the face used; None when the image was used as it is
    aligned: bool  # True when the crop was aligned on landmarks (False: used as it is)
    message: str  # one line for the person uploading ("" when there is nothing to say)
    crop: FaceCrop
    photo_size: tuple[int, int]  # (width, height) of the upload
    transform: np.ndarray | None = field(default=None, repr=False)  # 2 x 3, photo px -> crop px

    def to_dict(self) -> dict:
        return {"faces": [f.to_dict() for f in self.faces], "used": self.used, "aligned": self.aligned,
                "crop": {"name": self.crop.name, "size": self.crop.size}, "message": self.message}

    def annotated(self, photo: Image.Image, max_side: int = 256) -> Image.Image:
        """The upload, shrunk to ``max_side``, with every detected box (the face used in green, others in grey) and
        the used face's landmarks drawn."""
        k = min(1.0, max_side / max(photo.size))
        out = photo.convert("RGB").resize((max(1, round(photo.width * k)), max(1, round(photo.height * k))),
                                          Image.BILINEAR)
        draw = ImageDraw.Draw(out)
        width = max(2, round(max(out.size) / 128))
        for i, f in reversed(list(enumerate(self.faces))):  # the used face drawn last, on top
            colour = (40, 220, 60) if i == self.used else (170, 170, 170)
            draw.rectangle([v * k for v in f.box], outline=colour, width=width)
            if i == self.used:
                for x, y in f.landmarks * k:
                    draw.ellipse([x - width, y - width, x + width, y + width], fill=(255, 60, 60))
        return out


def _photo_tensor(photo: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _resized(photo: Image.Image, size: int) -> torch.Tensor:
    """The whole (square) image resized to the crop size: how a framed image is used as it is."""
    im = photo.convert("RGB")
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return _photo_tensor(im)


def already_framed(face: DetectedFace, side: int, crop: FaceCrop) -> bool:
    """Whether a face in a square image of ``side`` px already sits where ``crop`` puts faces (see the module
    docstring): the image can then be used as it is."""
    m = similarity_transform(face.landmarks * (crop.size / side), crop.template)
    centre = np.array([[crop.size / 2, crop.size / 2]])
    shift = float(np.hypot(*(transform_points(m, centre)[0] - centre[0]))) / crop.size
    return (FRAMED_SCALE[0] <= transform_scale(m) <= FRAMED_SCALE[1]
            and abs(transform_rotation_deg(m)) <= FRAMED_ROLL_DEG and shift <= FRAMED_SHIFT)


def prepare_face(photo: Image.Image, crop: FaceCrop, detector: FaceDetector | None = None,
                 min_face: int = MIN_FACE) -> PreparedFace:
    """Detect, choose and align the face of an upload (an RGB PIL image) for a backend's ``crop``.

    The detector is ``detector``, else the crop's own (``crop.detector``), else MTCNN. Raises
    :class:`NoFaceError` / :class:`TinyFaceError` with a message meant for the person uploading."""
    faces = (detector or crop.detector or default_detector()).detect(photo)
    w, h = photo.size
    square = abs(w - h) <= SQUARE_TOLERANCE * max(w, h)
    as_is = dict(faces=faces, crop=crop, photo_size=(w, h), aligned=False)
    if not faces:
        if square and crop.as_is:
            return PreparedFace(_resized(photo, crop.size), used=None, **as_is,
                                message="No face detected; the square image is used as it is (as a face-world "
                                        "render would be).")
        raise NoFaceError(f"No face found in this image ({w}x{h} px). Upload a photo with one face, seen from the "
                          f"front, at least {min_face} px across.")
    face = faces[0]
    several = choice_message(faces, w)
    if square and crop.as_is and already_framed(face, w, crop):
        msg = "The image is already framed for this model: used as it is."
        return PreparedFace(_resized(photo, crop.size), used=0, **as_is, message=f"{several} {msg}".strip())
    if face.size < min_face:
        raise TinyFaceError(f"The {'largest ' if len(faces) > 1 else ''}face found is only {face.size:.0f} px "
                            f"across; faces need at least {min_face} px. Upload a larger or closer photo.")
    m = similarity_transform(face.landmarks, crop.template)
    k = min(1.0, 2.0 * transform_scale(m))  # big photo, small crop: shrink as uint8 first (memory), then warp
    small = photo if k == 1.0 else photo.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BOX)
    image, _ = align_face(_photo_tensor(small), face.landmarks * np.array([small.width / w, small.height / h]),
                          crop)
    return PreparedFace(image, faces, 0, True, several, crop, (w, h), m)
