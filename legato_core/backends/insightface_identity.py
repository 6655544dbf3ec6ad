"""Identity backend on insightface: detect, align on 5 landmarks, embed, from a model pack in a local folder.

Why a wrapper: insightface's ``FaceAnalysis`` silently tries to download a pack whose folder is missing and fails
with a bare ``AssertionError`` when a pack has no detector (e.g. a nested ``antelopev2/antelopev2`` folder left by
unzipping). Here the folder is checked first (insightface never sees a missing path, so it never downloads), the
largest face is used and every other case gets an error that says what to do.

Two roles:

- :class:`InsightFaceIdentity` is the *judge* (metrics) and the upload path (photo -> unit 512-d embedding). It
  runs ONNX models, so it has no gradients (``differentiable = False``).
- :class:`TorchArcFace` wraps a differentiable torch ArcFace that the user provides (e.g. IR-SE50 as TorchScript),
  for training identity losses. Without one, the diffusion backends train with epsilon-matching only.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checksums import file_sha256

log = logging.getLogger(__name__)

# insightface's 5-point ArcFace template (eyes, nose tip, mouth corners) for a 112 x 112 crop
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


# Arc2Face's recognition model: arcface.onnx of huggingface.co/FoivosPar/Arc2Face (260,694,151 bytes; SHA-256 from
# its git-LFS pointer as mirrored in camenduru/Arc2Face-hf@cbf9751, models/antelopev2/arcface.onnx)
ARC2FACE_RECOGNITION_SHA256 = "ec639a0429b4819130d1405a2d3b38beaa4cc4a6c5bd9cf48b94fdf65461de83"
ARC2FACE_RECOGNITION_SOURCE = ("arcface.onnx from huggingface.co/FoivosPar/Arc2Face (hf_hub_download(repo_id="
                               "'FoivosPar/Arc2Face', filename='arcface.onnx'))")
RECOGNITION_HINT = ("a recognition model: for arc2face Arc2Face's own " + ARC2FACE_RECOGNITION_SOURCE + "; "
                    "antelopev2's glintr100.onnx and buffalo_l's w600k_r50.onnx embed faces in another space and "
                    "serve only the ddpm backend's landmarks")


class IdentityPackError(FileNotFoundError):
    """The insightface model pack folder is missing or lacks a detector / recognition model."""


class FaceNotFoundError(ValueError):
    """No face was detected in an uploaded photo."""


class MultipleFacesError(ValueError):
    """Several faces were detected and the caller asked not to pick one."""


class MultipleFacesWarning(UserWarning):
    """Several faces were detected; the largest one was used (the message says which)."""


@dataclass
class FaceEmbedding:
    """One photo's identity: the unit embedding of its largest face and where that face was."""

    embedding: torch.Tensor  # (D,) L2-normalised, float32, CPU
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in input pixels
    kps: np.ndarray  # (5, 2) landmarks in input pixels
    det_score: float
    n_faces: int
    message: str = ""
    others: list[tuple[float, float, float, float]] = field(default_factory=list)


def _to_bgr_uint8(image) -> np.ndarray:
    """PIL image, HWC RGB uint8/float array or (3, H, W) torch tensor in [0, 1] -> HWC BGR uint8 (insightface)."""
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        if x.dim() == 4:
            if len(x) != 1:
                raise ValueError(f"expected one image, got a batch of {len(x)}")
            x = x[0]
        if x.dim() != 3 or x.shape[0] not in (1, 3):
            raise ValueError(f"expected an image tensor (3, H, W), got {tuple(x.shape)}")
        arr = (x.clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    else:
        arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}")
        arr = arr[..., :3]
        if arr.dtype != np.uint8:
            scale = 255.0 if arr.max() <= 1.0 else 1.0
            arr = np.clip(arr.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr[..., ::-1])


def _box_area(bbox) -> float:
    return float(max(0.0, bbox[2] - bbox[0]) * max(0.0, bbox[3] - bbox[1]))


def _fmt_box(bbox) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in bbox) + ")"


def resolve_pack_dir(path: str | Path) -> tuple[Path, list[str]]:
    """The folder that holds the pack's ``*.onnx`` files, and notes on what was corrected.

    Accepts the pack folder itself (``.../models/antelopev2``) or the nested folder unzipping often leaves
    (``antelopev2/antelopev2``). Never downloads: a missing folder is an :class:`IdentityPackError`.
    """
    p = Path(path).expanduser()
    hint = ("Download the pack (e.g. antelopev2) on a machine with internet access, unzip it and pass the folder "
            f"that contains the .onnx files: a detector scrfd_*.onnx and {RECOGNITION_HINT}.")
    if not p.exists():
        raise IdentityPackError(f"insightface pack folder not found: {p}. {hint}")
    if not p.is_dir():
        raise IdentityPackError(f"insightface pack path is not a folder: {p}. {hint}")
    notes: list[str] = []
    if not list(p.glob("*.onnx")):
        nested = [d for d in sorted(p.iterdir()) if d.is_dir() and list(d.glob("*.onnx"))]
        if len(nested) == 1:
            notes.append(f"using the nested folder {nested[0]} (the pack was unzipped into its own folder)")
            p = nested[0]
        else:
            raise IdentityPackError(f"insightface pack folder {p} has no .onnx files. {hint}")
    return p.resolve(), notes


class InsightFaceIdentity:
    """insightface detection + 5-point alignment + recognition from a local pack; the judge and the upload path.

    ``embed(images)`` follows the legato identity-model convention ((B, 3, H, W) in [0, 1] -> unit vectors), so it
    can score metrics. ``threshold`` is the same-person cosine used by targets/metrics; 0.4 is a commonly used
    value for ArcFace-style models, not a calibration of the pack you load.
    """

    differentiable = False

    def __init__(self, pack: str | Path, det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5,
                 providers: list[str] | None = None, threshold: float = 0.4):
        try:
            import onnxruntime
            from insightface.app import FaceAnalysis
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("the insightface identity backend needs `pip install -r requirements-backends.txt` "
                              f"(insightface, onnxruntime): {e}") from e
        self.pack_dir, self.notes = resolve_pack_dir(pack)
        for note in self.notes:
            log.warning("insightface pack: %s", note)
        if providers is None:
            available = onnxruntime.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.providers = list(providers)
        onnx_files = sorted(f.name for f in self.pack_dir.glob("*.onnx"))
        try:
            # a path that exists is used as is by FaceAnalysis: no download is ever attempted
            app = FaceAnalysis(name=str(self.pack_dir), root=str(self.pack_dir),
                               allowed_modules=["detection", "recognition"], providers=self.providers)
        except AssertionError as e:
            raise IdentityPackError(
                f"insightface pack {self.pack_dir} has no face detector (files: {onnx_files}). A pack needs an SCRFD "
                "detector such as scrfd_10g_bnkps.onnx (antelopev2) or det_10g.onnx (buffalo_l).") from e
        if "recognition" not in app.models:
            raise IdentityPackError(
                f"insightface pack {self.pack_dir} has no recognition model (files: {onnx_files}). Add "
                f"{RECOGNITION_HINT}.")
        ctx = 0 if "CUDAExecutionProvider" in self.providers else -1
        app.prepare(ctx_id=ctx, det_thresh=det_thresh, det_size=det_size)
        self.app = app
        self.det_size, self.det_thresh, self.threshold = tuple(det_size), det_thresh, float(threshold)
        self.detection_file = Path(app.models["detection"].model_file).name
        self.recognition_path = Path(app.models["recognition"].model_file)
        self.recognition_file = self.recognition_path.name
        self.last_missing = 0  # images without a face in the last embed() call

    def describe(self) -> str:
        return (f"insightface pack {self.pack_dir.name}: detector {self.detection_file}, recognition "
                f"{self.recognition_file} (ONNX, no gradients; judge / upload embedding)")

    # -- faces -------------------------------------------------------------------------------------------------
    def detect(self, image) -> list:
        """All faces (insightface ``Face`` objects with bbox, kps, det_score, embedding), largest first."""
        faces = self.app.get(_to_bgr_uint8(image))
        return sorted(faces, key=lambda f: _box_area(f.bbox), reverse=True)

    def detect_boxes(self, image) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(box, 5 landmarks, score) of every face, largest first: the detector alone, no recognition."""
        bboxes, kpss = self.app.det_model.detect(_to_bgr_uint8(image), max_num=0, metric="default")
        if kpss is None:
            raise IdentityPackError(f"the detector of {self.pack_dir} gives no landmarks: use one with 5-point "
                                    "keypoints such as scrfd_10g_bnkps.onnx")
        faces = [(b[:4].astype(np.float32), np.asarray(k, np.float32), float(b[4]))
                 for b, k in zip(bboxes, kpss, strict=True)]
        return sorted(faces, key=lambda f: _box_area(f[0]), reverse=True)

    def face_detector(self, max_side: int = 1024) -> PackDetector:
        """This pack's detector behind legato's upload path (``faces.prepare_face``)."""
        return PackDetector(self, max_side)

    @torch.no_grad()
    def embed_aligned(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops (B, 3, S, S) in [0, 1] aligned to ArcFace's template -> (B, D) unit embeddings, with no detection.

        The crop was aligned on the landmarks found in the original photo; resized to the recogniser's input it is
        what insightface's ``norm_crop`` makes from that photo, so the upload is detected once.
        """
        if crops.dim() != 4 or crops.shape[1] != 3:
            raise ValueError(f"expected aligned crops (B, 3, S, S), got {tuple(crops.shape)}")
        rec = self.app.models["recognition"]
        w, h = rec.input_size
        x = F.interpolate(crops.detach().float().cpu(), size=(h, w), mode="bilinear", antialias=True,
                          align_corners=False)
        feats = np.asarray(rec.get_feat([_to_bgr_uint8(c) for c in x]), dtype=np.float32)
        return F.normalize(torch.from_numpy(feats), dim=1)

    def embed_photo(self, image, multiple: str = "largest") -> FaceEmbedding:
        """An uploaded photo -> the unit embedding of its largest face.

        ``multiple="largest"`` warns (MultipleFacesWarning) and uses the largest face; ``"error"`` raises
        MultipleFacesError. Either way the message names the face used.
        """
        if multiple not in ("largest", "error"):
            raise ValueError("multiple must be 'largest' or 'error'")
        bgr = _to_bgr_uint8(image)
        faces = sorted(self.app.get(bgr), key=lambda f: _box_area(f.bbox), reverse=True)
        h, w = bgr.shape[:2]
        if not faces:
            raise FaceNotFoundError(
                f"no face found in the photo ({w}x{h} px) by {self.detection_file} at det_size {self.det_size}, "
                f"threshold {self.det_thresh}. Use a photo where one face is clearly visible, frontal and not tiny.")
        face = faces[0]
        bbox = tuple(float(v) for v in face.bbox)
        message = ""
        if len(faces) > 1:
            message = (f"found {len(faces)} faces; used the largest at box {_fmt_box(bbox)} "
                       f"({bbox[2] - bbox[0]:.0f}x{bbox[3] - bbox[1]:.0f} px, score {float(face.det_score):.2f}); "
                       "others at " + ", ".join(_fmt_box(f.bbox) for f in faces[1:]))
            if multiple == "error":
                raise MultipleFacesError(message + ". Crop the photo to one face.")
            warnings.warn(message, MultipleFacesWarning, stacklevel=2)
        emb = torch.from_numpy(np.asarray(face.embedding, dtype=np.float32))
        return FaceEmbedding(F.normalize(emb, dim=0), bbox, np.asarray(face.kps, dtype=np.float32),
                             float(face.det_score), len(faces), message,
                             [tuple(float(v) for v in f.bbox) for f in faces[1:]])

    @torch.no_grad()
    def embed(self, images: torch.Tensor, missing: str = "zeros") -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) unit embeddings of each image's largest face.

        An image without a face gets a zero vector (``missing="zeros"``: cosine 0, i.e. "not this person", and
        counted in ``last_missing``) or raises FaceNotFoundError (``missing="raise"``).
        """
        if missing not in ("zeros", "raise"):
            raise ValueError("missing must be 'zeros' or 'raise'")
        out, n_missing, dim = [], 0, None
        for img in images:
            faces = self.detect(img)
            if not faces:
                if missing == "raise":
                    raise FaceNotFoundError("no face found in a rendered image")
                n_missing += 1
                out.append(None)
                continue
            e = F.normalize(torch.from_numpy(np.asarray(faces[0].embedding, dtype=np.float32)), dim=0)
            dim = len(e)
            out.append(e)
        self.last_missing = n_missing
        dim = dim or 512
        return torch.stack([e if e is not None else torch.zeros(dim) for e in out]) if out else torch.zeros(0, dim)

    __call__ = embed

    def landmarks(self, images: torch.Tensor) -> list[np.ndarray | None]:
        """5-point landmarks of each image's largest face (None where no face is found)."""
        res = []
        for img in images:
            faces = self.detect(img)
            res.append(np.asarray(faces[0].kps, dtype=np.float32) if faces else None)
        return res


class PackDetector:
    """An insightface pack's SCRFD as a legato face detector (``detect(photo)`` -> ``DetectedFace`` list).

    Why: Arc2Face's embeddings come from this detector's landmarks; detecting with it on the original photo gives
    the crop and the embedding from one detection (SCRFD often misses faces in tight crops).
    """

    def __init__(self, identity: InsightFaceIdentity, max_side: int = 1024):
        self.identity, self.max_side = identity, max_side

    def detect(self, image) -> list:
        from PIL import Image

        from ..faces import DetectedFace

        k = 1.0
        if isinstance(image, Image.Image) and max(image.size) > self.max_side:  # the detector sees 640 px anyway
            k = self.max_side / max(image.size)
            image = image.convert("RGB").resize((max(1, round(image.width * k)), max(1, round(image.height * k))),
                                                Image.BOX)
        return [DetectedFace(tuple(float(v) / k for v in box), score, kps / k)
                for box, kps, score in self.identity.detect_boxes(image)]


def check_arc2face_recognition(identity: InsightFaceIdentity, expected_sha256: str | None = None) -> str:
    """Refuse a pack whose recognition model is not Arc2Face's ``arcface.onnx`` (by SHA-256); returns the hash.

    ``expected_sha256`` replaces the pinned hash: tests set their stand-in's, a user a re-export they trust.
    """
    expected = (expected_sha256 or ARC2FACE_RECOGNITION_SHA256).lower()
    got = file_sha256(identity.recognition_path)
    if got != expected:
        raise IdentityPackError(
            f"insightface pack {identity.pack_dir}: its recognition model {identity.recognition_file} (SHA-256 "
            f"{got[:16]}...) is not Arc2Face's arcface.onnx (SHA-256 {expected[:16]}...), so uploads would condition "
            f"Arc2Face on the wrong identity. Put {ARC2FACE_RECOGNITION_SOURCE} into the pack folder and delete the "
            "other recognition models (antelopev2's glintr100.onnx) as Arc2Face's README says.")
    return got


# -- differentiable torch ArcFace ------------------------------------------------------------------------------
def _similarity_to_template(kps: np.ndarray, size: int) -> np.ndarray:
    """Least-squares similarity transform (2x3) taking landmarks ``kps`` to the ArcFace template at ``size``."""
    dst = ARCFACE_TEMPLATE_112 * (size / 112.0)
    src = np.asarray(kps, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    # Umeyama: rotation + uniform scale + translation
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_faces(images: torch.Tensor, kps: list[np.ndarray | None], size: int = 112,
                center_crop: float = 1.0) -> torch.Tensor:
    """Differentiable 5-point alignment: warp each image so its landmarks land on the ArcFace template.

    Rows without landmarks (None) get a centre crop of ``center_crop`` of the image resized to ``size``.
    """
    b, _, h, w = images.shape
    thetas = []
    for k in kps:
        if k is None:
            theta = torch.tensor([[center_crop, 0.0, 0.0], [0.0, center_crop, 0.0]])
        else:
            m = np.vstack([_similarity_to_template(k, size), [0, 0, 1]])
            inv = np.linalg.inv(m)  # output pixel -> input pixel
            # normalised coords (align_corners=False): x_pix = ((x_n + 1) * W - 1) / 2
            to_pix_out = np.array([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]])
            from_pix_in = np.linalg.inv(np.array([[w / 2, 0, (w - 1) / 2], [0, h / 2, (h - 1) / 2], [0, 0, 1]]))
            theta = torch.tensor((from_pix_in @ inv @ to_pix_out)[:2], dtype=torch.float32)
        thetas.append(theta)
    theta = torch.stack(thetas).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class TorchArcFace(nn.Module):
    """A user-provided differentiable ArcFace: (B, 3, 112, 112) RGB in [-1, 1] -> (B, D), as insightface feeds it.

    ``forward(images, kps=None)`` takes images in [0, 1], aligns them (5-point when landmarks are given, else a
    centre crop) and returns unit embeddings with gradients, for identity losses during training.
    """

    differentiable = True

    def __init__(self, net: nn.Module, input_size: int = 112, threshold: float = 0.4, center_crop: float = 1.0,
                 name: str = "torch-arcface"):
        super().__init__()
        self.net, self.input_size, self.threshold, self.center_crop, self.name = net, input_size, threshold, \
            center_crop, name
        try:
            self.net.eval()
        except NotImplementedError:  # torch.export modules have no train/eval modes
            pass
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor, kps: list[np.ndarray | None] | None = None) -> torch.Tensor:
        x = align_faces(images.float(), kps or [None] * len(images), self.input_size, self.center_crop)
        p = next(self.net.parameters(), None)
        x = x * 2 - 1 if p is None else (x * 2 - 1).to(p.device, p.dtype)
        return F.normalize(self.net(x).float(), dim=1)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)

    def describe(self) -> str:
        return f"{self.name} (torch, differentiable; training identity loss)"


def load_torch_arcface(path: str | Path, **kwargs) -> TorchArcFace:
    """Load a differentiable ArcFace saved as TorchScript (``torch.jit.save``) or ``torch.export`` (.pt2)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"torch ArcFace file not found: {p} (expected TorchScript .pt or torch.export .pt2)")
    if p.suffix == ".pt2":
        net = torch.export.load(str(p)).module()
    else:
        net = torch.jit.load(str(p), map_location="cpu")
    return TorchArcFace(net, name=p.name, **kwargs)
