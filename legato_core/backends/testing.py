"""Tiny random stand-ins for the real-model backends: an insightface pack, an Arc2Face folder and a DDPM folder.

They are built from the same classes and saved in the same on-disk layouts as the real checkpoints (no weights can
be downloaded here), so the loading code, the backend contract and the engine run end to end in seconds on a CPU.
The images they produce are noise; only the mechanics are meaningful.

The tiny insightface pack follows insightface's ONNX routing rules: a detector with 9 outputs (SCRFD: scores,
boxes and 5 landmarks at strides 8/16/32, 2 anchors) and a recogniser with a square 112 input and a dynamic batch,
normalisation kept outside the graph. Its detector "sees" a face in every 32 x 32 cell (on the 32-pixel grid of the
detector input) whose red channel is bright; a bright blue channel doubles the face's box, so tests can control the
number and sizes of faces.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_TEMPLATE = torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                          [70.7299, 92.2041]]) / 112.0


class TinySCRFD(nn.Module):
    """(1, 3, H, W) normalised RGB -> SCRFD's 9 outputs; a face per red 32-px cell (blue: twice as large)."""

    def forward(self, x: torch.Tensor):
        scores, boxes, kpss = [], [], []
        for stride in (8, 16, 32):
            p = F.avg_pool2d(x, stride)  # (1, 3, h, w), values in about [-1, 1]
            red = p[:, 0].reshape(1, -1).t()
            blue = p[:, 2].reshape(1, -1).t()
            score = torch.sigmoid(20 * (red - 0.5)) if stride == 32 else red * 0 + 1e-4
            side = 1 + (blue + 1) / 2  # box side in strides: 1 (blue 0) .. 2 (blue 255)
            box = torch.cat([side * 0, side * 0, side, side], 1)  # anchor at the cell's top-left corner
            kps = _TEMPLATE.reshape(1, 10) * side

            def two(t: torch.Tensor) -> torch.Tensor:  # 2 anchors per location, location-major
                return torch.stack([t, t], 1).reshape(-1, t.shape[1])

            scores.append(two(score))
            boxes.append(two(box))
            kpss.append(two(kps))
        return (*scores, *boxes, *kpss)


class TinyBlobSCRFD(nn.Module):
    """SCRFD's 9 outputs for one face: the bounding box of the bright-red pixels, landmarks at ArcFace's template.

    Unlike :class:`TinySCRFD` it does not depend on a grid or scale, so a tight crop and a loose photo of the same
    "face" give the same landmarks on the face (what a real detector does and the upload tests need).
    """

    def forward(self, x: torch.Tensor):
        h, w = x.shape[2], x.shape[3]
        mask = x[0, 0] > 0.5  # red above ~191 of 255
        xs = torch.arange(w, dtype=x.dtype)[None, :].expand(h, w)
        ys = torch.arange(h, dtype=x.dtype)[:, None].expand(h, w)
        x1 = torch.where(mask, xs, torch.full_like(xs, 1e6)).amin()
        y1 = torch.where(mask, ys, torch.full_like(ys, 1e6)).amin()
        x2 = torch.where(mask, xs + 1, torch.zeros_like(xs)).amax()
        y2 = torch.where(mask, ys + 1, torch.zeros_like(ys)).amax()
        found = mask.any().to(x.dtype)
        scores, boxes, kpss = [], [], []
        for stride in (8, 16, 32):
            n = (h // stride) * (w // stride) * 2
            score = torch.full((n, 1), 1e-4, dtype=x.dtype)
            if stride == 32:  # the first anchor (centre 0, 0) carries the face
                score = torch.cat([found.reshape(1, 1) * 0.99 + 1e-4, score[1:]])
            box = torch.stack([-x1, -y1, x2, y2]).reshape(1, 4) / stride
            kps = (torch.stack([x1, y1]) + _TEMPLATE * torch.stack([x2 - x1, y2 - y1])).reshape(1, 10) / stride
            scores.append(score)
            boxes.append(box.expand(n, 4))
            kpss.append(kps.expand(n, 10))
        return (*scores, *boxes, *kpss)


def tiny_blob_photo(size: int | tuple[int, int], box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """An RGB uint8 photo for :class:`TinyBlobSCRFD`: a red "face" at ``box`` (x1, y1, x2, y2) with a smooth green
    pattern fixed to the face (``seed``), so crops of one photo show the same face."""
    w, h = (size, size) if isinstance(size, int) else size
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    pattern = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(seed))
    face = F.interpolate(pattern, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)[0, 0]
    img[y1:y2, x1:x2, 0] = 255
    img[y1:y2, x1:x2, 1] = (face.numpy() * 255).round().astype(np.uint8)
    return img


class TinyArcFace(nn.Module):
    """(N, 3, 112, 112) RGB in [-1, 1] -> (N, 512): the recogniser's input convention, at toy size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, 4)
        self.fc = nn.Linear(8 * 28 * 28, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1))


def build_tiny_insightface_pack(directory: str | Path, seed: int = 0, with_detector: bool = True,
                                with_recognizer: bool = True, detector: str = "grid") -> Path:
    """Write ``det_tiny.onnx`` (``detector``: "grid" = TinySCRFD, "blob" = TinyBlobSCRFD) and ``rec_tiny.onnx``
    into ``directory``; returns it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        if with_detector:
            net = {"grid": TinySCRFD, "blob": TinyBlobSCRFD}[detector]()
            torch.onnx.export(net, torch.zeros(1, 3, 128, 128), str(d / "det_tiny.onnx"),
                              input_names=["input.1"], output_names=[f"out{i}" for i in range(9)],
                              dynamic_axes={"input.1": {2: "height", 3: "width"}}, dynamo=False, opset_version=17)
        if with_recognizer:
            torch.onnx.export(TinyArcFace().eval(), torch.zeros(1, 3, 112, 112), str(d / "rec_tiny.onnx"),
                              input_names=["data"], output_names=["fc1"],
                              dynamic_axes={"data": {0: "N"}, "fc1": {0: "N"}}, dynamo=False, opset_version=17)
    return d


def stand_in_recognition(pack: str | Path) -> dict:
    """Arc2Face backend options that accept this tiny pack's recogniser in place of Arc2Face's arcface.onnx (the
    backend refuses any other recognition model; tests state the substitution explicitly)."""
    from ..checksums import file_sha256

    return {"expected_recognition_sha256": file_sha256(Path(pack) / "rec_tiny.onnx")}


def tiny_face_photo(faces: list[tuple[int, int, bool]] = ((1, 1, False),), size: int = 128,
                    seed: int | None = None) -> np.ndarray:
    """An RGB uint8 photo for the tiny detector: a face per (row, col, big) 32-px cell; ``seed`` adds texture."""
    img = np.zeros((size, size, 3), np.uint8)
    if seed is not None:
        img[..., 1] = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    for r, c, big in faces:
        img[32 * r:32 * r + 32, 32 * c:32 * c + 32, 0] = 255
        if big:
            img[32 * r:32 * r + 32, 32 * c:32 * c + 32, 2] = 255
    return img


# -- diffusers ----------------------------------------------------------------------------------------------------
def _tiny_tokenizer_files(directory: Path, words: tuple[str, ...] = ("photo", "of", "a", "id", "person")) -> None:
    """A CLIP BPE vocabulary that spells the Arc2Face prompt in whole-word tokens."""
    vocab: dict[str, int] = {}
    merges: list[str] = []

    def add(tok: str) -> None:
        vocab.setdefault(tok, len(vocab))

    for ch in "abcdefghijklmnopqrstuvwxyz":
        add(ch)
        add(ch + "</w>")
    for w in words:
        cur = w[0]
        for i, ch in enumerate(w[1:], 1):
            nxt = ch + "</w>" if i == len(w) - 1 else ch
            merges.append(f"{cur} {nxt}")
            cur += nxt
            add(cur)
    add("<|startoftext|>")
    add("<|endoftext|>")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def build_tiny_arc2face(directory: str | Path, base_directory: str | Path | None = None, seed: int = 0) -> Path:
    """Arc2Face's layout: ``arc2face/`` (UNet2DConditionModel), ``encoder/`` (CLIPTextModel, hidden 512 + 32);
    ``vae/``, ``tokenizer/``, ``scheduler/`` (the SD1.5 parts) go to ``base_directory`` (default: the same folder)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(directory)
    base = Path(base_directory) if base_directory is not None else root
    torch.manual_seed(seed)
    hidden = 512 + 32
    # SD1.5's tokenizer/ layout: vocab.json + merges.txt + tokenizer_config.json
    _tiny_tokenizer_files(base / "tokenizer")
    (base / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>"}))
    tok = CLIPTokenizer.from_pretrained(base / "tokenizer")
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    te.save_pretrained(root / "encoder")
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8,
                                cross_attention_dim=hidden, attention_head_dim=8)
    unet.save_pretrained(root / "arc2face")
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=8, sample_size=16)
    vae.save_pretrained(base / "vae")
    DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1).save_pretrained(base / "scheduler")
    return root


def build_tiny_ddpm(directory: str | Path, seed: int = 0, output_scale: float = 0.01) -> Path:
    """google/ddpm-*'s pipeline layout (``unet/``, ``scheduler/``) with a 16 x 16 UNet2DModel.

    ``output_scale`` shrinks the random noise prediction: a random UNet's epsilon does not match x_T, and DDIM
    inversion then cannot round-trip (a trained model's does); a near-zero predictor makes it nearly exact.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    root = Path(directory)
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)
    with torch.no_grad():
        unet.conv_out.weight.mul_(output_scale)
        unet.conv_out.bias.mul_(output_scale)
    unet.save_pretrained(root / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  clip_sample=True, variance_type="fixed_small").save_pretrained(root / "scheduler")
    return root
