"""Offline face detection: the MTCNN cascade (P-Net proposals -> R-Net -> O-Net boxes + 5 landmarks) in torch.

Our own implementation of the published cascade (image pyramid, thresholds 0.6/0.7/0.7, pyramid factor 0.709,
non-maximum suppression), with plain torch ops instead of torchvision's. Crops that cross the image border are
zero-padded, as in the original MTCNN. Large photos are detected on a copy whose long side is at most
``max_side`` pixels; boxes and landmarks are returned in the input's pixels (x right, y down).

Landmark order: the eye on the image's left, the eye on the image's right, nose tip, left mouth corner, right
mouth corner (the order of insightface's ArcFace template).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .networks import MTCNNNetworks

THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
MIN_FACE = 20  # smallest face the pyramid searches for, in detection pixels
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class DetectedFace:
    """One face: box (x1, y1, x2, y2) and landmarks (5, 2) in input pixels, MTCNN's O-Net probability."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2) float32, LANDMARK_NAMES order

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def size(self) -> float:
        """The face's size in pixels: the shorter side of its box."""
        return min(self.width, self.height)

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(self.score, 4),
                "landmarks": {n: [round(float(x), 2), round(float(y), 2)]
                              for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)}}


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU between every box of ``a`` (N, 4) and ``b`` (M, 4), boxes as x1, y1, x2, y2 -> (N, M)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, best first.

    ``mode="union"``: overlap = IoU; ``mode="min"``: intersection over the smaller box (MTCNN's last stage, which
    also removes a small box lying inside a bigger one)."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    alive = torch.ones(len(boxes), dtype=torch.bool)
    keep = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = torch.nonzero(alive[i + 1:]).flatten() + i + 1
        if len(rest) == 0:
            break
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        denom = torch.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        alive[rest[inter / denom.clamp(min=1e-9) > threshold]] = False
    return order[torch.tensor(keep, dtype=torch.long)]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(1).values[:, None] / 2
    return torch.cat([c - half, c + half], 1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply the networks' box offsets (fractions of the box's width/height)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def _crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Square crops of ``boxes`` from image (3, H, W) on the 0..255 scale, zero-padded outside, resized to size."""
    _, h, w = image.shape
    out = []
    for x1, y1, x2, y2 in boxes.round().long().tolist():
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = torch.zeros(3, y2 - y1, x2 - x1)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[:, sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[:, sy1:sy2, sx1:sx2]
        out.append(F.interpolate(patch[None], size=(size, size), mode="area"))
    return (torch.cat(out) - 127.5) / 128.0


class FaceDetector:
    """MTCNN on CPU. ``detect(image)`` -> faces, largest first."""

    def __init__(self, networks: MTCNNNetworks | None = None, min_face: int = MIN_FACE,
                 thresholds: tuple[float, float, float] = THRESHOLDS, max_side: int = 1024):
        self.nets = networks or MTCNNNetworks.from_pretrained()
        self.min_face, self.thresholds, self.max_side = min_face, thresholds, max_side

    @staticmethod
    def _as_tensor(image) -> torch.Tensor:
        """PIL image, (H, W[, 3]) uint8 array or (3, H, W) float tensor in [0, 1] -> (3, H, W) float on 0..255."""
        if isinstance(image, torch.Tensor):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"expected an image tensor (3, H, W), got {tuple(image.shape)}")
            return image.detach().float().cpu() * 255.0
        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
        return torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1).float()

    @torch.inference_mode()
    def detect(self, image) -> list[DetectedFace]:
        """Every face in ``image``, largest box first (an empty list when there is none)."""
        if isinstance(image, Image.Image) and max(image.size) > self.max_side:
            # shrink big photos as uint8 first: a 40 MP photo as a float tensor alone would take 480 MB
            k = self.max_side / max(image.size)
            small = image.convert("RGB").resize((max(1, round(image.width * k)), max(1, round(image.height * k))),
                                                Image.BOX)
            shrink = small.width / image.width
            img = self._as_tensor(small)
        else:
            img = self._as_tensor(image)
            h, w = img.shape[1:]
            shrink = min(1.0, self.max_side / max(h, w))
            if shrink < 1.0:
                img = F.interpolate(img[None], scale_factor=shrink, mode="area")[0]
        boxes, landmarks, scores = self._cascade(img)
        if shrink < 1.0:
            boxes, landmarks = boxes / shrink, landmarks / shrink
        faces = [DetectedFace(tuple(float(v) for v in b), float(s), lm.numpy().astype(np.float32))
                 for b, lm, s in zip(boxes, landmarks, scores, strict=True)]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def _cascade(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t1, t2, t3 = self.thresholds
        empty = (torch.zeros(0, 4), torch.zeros(0, 5, 2), torch.zeros(0))
        h, w = img.shape[1:]
        # stage 1: P-Net on a pyramid whose first level maps min_face pixels onto P-Net's 12-pixel window
        scale, proposals = 12.0 / self.min_face, []
        while min(h, w) * scale >= 12:
            level = F.interpolate(img[None], size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            offsets, prob = self.nets.pnet((level - 127.5) / 128.0)
            ys, xs = torch.nonzero(prob[0] >= t1, as_tuple=True)
            if len(ys):
                cells = torch.stack([xs, ys], 1).float()
                b = torch.cat([(2 * cells + 1) / scale, (2 * cells + 12) / scale], 1).floor()
                s = prob[0, ys, xs]
                keep = nms(b, s, 0.5)
                proposals.append((b[keep], s[keep], offsets[0][:, ys, xs].T[keep]))
            scale *= PYRAMID_FACTOR
        if not proposals:
            return empty
        boxes, scores, offsets = (torch.cat(p) for p in zip(*proposals, strict=True))
        keep = nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], offsets[keep]))
        # stage 2: R-Net on 24 x 24 crops
        offsets, scores = self.nets.rnet(_crops(img, boxes, 24))
        ok = scores > t2
        if not ok.any():
            return empty
        boxes, scores, offsets = boxes[ok], scores[ok], offsets[ok]
        keep = nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[keep], offsets[keep]))
        # stage 3: O-Net on 48 x 48 crops: final boxes and landmarks
        offsets, points, scores = self.nets.onet(_crops(img, boxes, 48))
        ok = scores > t3
        if not ok.any():
            return empty
        boxes, points, scores, offsets = boxes[ok], points[ok], scores[ok], offsets[ok]
        wh = boxes[:, 2:] - boxes[:, :2]
        landmarks = torch.stack([boxes[:, None, 0] + points[:, :5] * wh[:, None, 0],
                                 boxes[:, None, 1] + points[:, 5:] * wh[:, None, 1]], -1)
        boxes = _regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], landmarks[keep], scores[keep]


@functools.lru_cache(maxsize=1)
def default_detector() -> FaceDetector:
    """One shared detector per process (the weights are 2 MB, loading takes ~10 ms; the networks are frozen)."""
    return FaceDetector()


def detect_faces(image) -> list[DetectedFace]:
    """Every face in ``image`` (PIL, uint8 array or (3, H, W) tensor in [0, 1]), largest first."""
    return default_detector().detect(image)
