"""dlib's ResNet face embedder (``dlib_face_recognition_resnet_model_v1``) as a torch module, read from the installed
``face-recognition-models`` package: an offline real-face identity network, independent of the ArcFace family.

Why: the diffusers backends condition (Arc2Face) and train with ArcFace-style networks; judging their renders with an
ArcFace of the same family would grade the model with the network it was trained against. dlib's ResNet is a
different network (ResNet-29-like, metric loss, 128-d), CC0 model files shipped inside a registry package, so it
runs without any download.

- :func:`read_dlib_net` parses dlib's serialisation (``.dat``) in plain Python into an ordered list of layers.
- :class:`DlibResNet` is the same computation in torch (differentiable); inputs are 150 x 150 aligned face chips.
- :func:`load_dlib_resnet` builds it once from the package's file and caches the weights as safetensors in the user
  cache (``$LEGATO_CACHE_DIR`` or ``~/.cache/legato``), never in the repository (22 MB).

dlib's metric: two chips show the same person when the **Euclidean** distance of their descriptors is below 0.6.
The descriptors are not unit vectors and their raw cosine does not separate people, so nothing here uses cosine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..checksums import file_sha256

PACKAGE = "face-recognition-models"
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib's compute_face_descriptor default
SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold on the Euclidean distance
CACHE_NAME = "dlib_resnet_v1.safetensors"


class DlibModelError(FileNotFoundError):
    """The ``face-recognition-models`` files are missing or not the expected dlib network."""


def dlib_models_dir() -> Path:
    """The installed package's ``models/`` folder, found without importing it (its ``__init__`` needs
    ``pkg_resources``, which current setuptools no longer provides)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        models = Path(loc) / "models"
        if (models / MODEL_FILE).is_file():
            return models
    raise DlibModelError(f"dlib's face models not found: install them with `pip install {PACKAGE}==0.3.0` "
                         "(listed in requirements-backends.txt; CC0 model files, nothing is downloaded at run time)")


# -- dlib's serialisation -------------------------------------------------------------------------------------------
class _Reader:
    """dlib's primitives: integers as (size|sign byte, little-endian magnitude), floats as (mantissa, exponent)
    integers, strings as (length, bytes), tensors as (version 2, n, k, nr, nc, raw little-endian float32)."""

    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def int(self) -> int:
        head = self.data[self.pos]
        size, negative = head & 0x0F, bool(head & 0x80)
        if not 1 <= size <= 8:
            raise DlibModelError(f"malformed dlib integer at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if negative else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0 ** exponent

    def ints(self, n: int) -> list[int]:
        return [self.int() for _ in range(n)]

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibModelError(f"unsupported dlib tensor version {version} at byte {self.pos}")
        n, k, nr, nc = self.ints(4)
        count = n * k * nr * nc
        out = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).copy()
        self.pos += 4 * count
        return out

    def alias_shape(self) -> tuple[int, int, int, int]:
        self.int()  # alias_tensor version
        n, k, nr, nc = self.ints(4)
        return n, k, nr, nc


@dataclass
class DlibLayer:
    """One computational layer of a dlib network in forward order (tags/skips carry no data and are implied)."""

    kind: str  # input | con | affine | relu | max_pool | avg_pool | add_prev | fc
    params: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


_LAYER_NAMES = {b"input_rgb_image_sized": "input", b"con_4": "con", b"affine_": "affine", b"relu_": "relu",
                b"max_pool_2": "max_pool", b"avg_pool_2": "avg_pool", b"add_prev_": "add_prev", b"fc_2": "fc"}


_NAME_PATTERN = re.compile(b"|".join(re.escape(b"\x01" + bytes([len(n)]) + n) for n in _LAYER_NAMES))


def read_dlib_net(path: str | Path) -> list[DlibLayer]:
    """Parse a dlib DNN ``.dat`` of the face-recognition ResNet family into its layers, input first.

    dlib writes a network as nested add_layer records whose details come out in forward order, each after its
    name string; this reads those details and skips everything else (gradients, solver state, flags).
    """
    data = Path(path).read_bytes()
    if b"loss_metric_" not in data[:64]:
        raise DlibModelError(f"{path} is not a dlib metric-learning network (no loss_metric_ header)")
    layers: list[DlibLayer] = []
    pos = 0
    for hit in _NAME_PATTERN.finditer(data):
        start, name = hit.start(), hit.group()[2:]
        if start < pos:  # inside the data of the layer just read
            continue
        r = _Reader(data, start + 2 + len(name))
        kind = _LAYER_NAMES[name]
        layer = DlibLayer(kind)
        if kind == "input":
            layer.config = {"mean_rgb": [r.float(), r.float(), r.float()], "size": r.ints(2)}
        elif kind == "con":
            flat = r.tensor()
            filters, nr, nc, sy, sx, py, px = r.ints(7)
            _, k, _, _ = r.alias_shape()
            n_w = filters * k * nr * nc
            if len(flat) != n_w + filters:
                raise DlibModelError(f"conv at byte {start}: {len(flat)} values for {filters}x{k}x{nr}x{nc} + bias")
            layer.params = {"weight": flat[:n_w].reshape(filters, k, nr, nc), "bias": flat[n_w:]}
            layer.config = {"stride": (sy, sx), "padding": (py, px)}
        elif kind == "affine":
            flat = r.tensor()
            _, k, _, _ = r.alias_shape()
            layer.params = {"gamma": flat[:k], "beta": flat[k:2 * k]}
        elif kind in ("max_pool", "avg_pool"):
            nr, nc, sy, sx, py, px = r.ints(6)
            layer.config = {"size": (nr, nc), "stride": (sy, sx), "padding": (py, px)}
        elif kind == "fc":
            n_out, n_in = r.ints(2)
            flat = r.tensor()
            if len(flat) != n_in * n_out:
                raise DlibModelError(f"fully connected layer at byte {start}: only fc_no_bias {n_in}->{n_out} "
                                     f"is supported, found {len(flat)} values")
            layer.params = {"weight": flat.reshape(n_in, n_out).T.copy()}  # dlib computes x @ W, torch x @ W.T
        layers.append(layer)
        pos = r.pos
    return layers


# -- the torch network ----------------------------------------------------------------------------------------------
def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: tensors of different shapes are zero-extended (bottom/right, extra channels) to the larger
    one before adding. It happens where a strided 3x3 conv and a 2x2 average pool disagree on an output size."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return grow(a) + grow(b)


class _Affine(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


class _Residual(nn.Module):
    """relu(block(x) + shortcut(x)); block = conv(stride) affine relu conv affine; shortcut = x, or a 2x2/2 average
    pool of x on downsampling units (dlib's residual_down)."""

    def __init__(self, c_in: int, c_out: int, stride: int, pool: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1 if stride == 1 else 0)
        self.aff1 = _Affine(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1)
        self.aff2 = _Affine(c_out)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.pool else x
        return F.relu(_add_prev(y, skip))


class DlibResNet(nn.Module):
    """dlib's face ResNet: (B, 3, 150, 150) RGB chips in [0, 1] -> (B, 128) descriptors (not normalised).

    ``units``: (in channels, out channels, stride, average-pooled shortcut) per residual unit, as read from the file.
    """

    def __init__(self, units: list[tuple[int, int, int, bool]], stem_channels: int = 32, embed_dim: int = 128,
                 mean_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298)):
        super().__init__()
        self.units_config = [tuple(u) for u in units]
        self.stem = nn.Conv2d(3, stem_channels, 7, 2, padding=0)
        self.stem_affine = _Affine(stem_channels)
        self.units = nn.ModuleList(_Residual(*u) for u in units)
        self.fc = nn.Linear(units[-1][1], embed_dim, bias=False)
        self.register_buffer("mean_rgb", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips * 255.0 - self.mean_rgb) / 256.0  # dlib's input_rgb_image: (pixel - mean) / 256
        x = F.max_pool2d(F.relu(self.stem_affine(self.stem(x))), 3, 2)
        for unit in self.units:
            x = unit(x)
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_dlib_layers(cls, layers: list[DlibLayer]) -> DlibResNet:
        """Map the parsed layer list onto the torch modules, checking that it has exactly the expected shape."""
        kinds = [layer.kind for layer in layers]
        if kinds[:5] != ["input", "con", "affine", "relu", "max_pool"] or kinds[-2:] != ["avg_pool", "fc"]:
            raise DlibModelError(f"unexpected dlib network layout: starts {kinds[:5]}, ends {kinds[-2:]}")
        body, units, i = layers[5:-2], [], 0
        unit_plain = ["con", "affine", "relu", "con", "affine", "add_prev", "relu"]
        unit_down = ["con", "affine", "relu", "con", "affine", "avg_pool", "add_prev", "relu"]
        parsed = []
        while i < len(body):
            seq = [layer.kind for layer in body[i:i + 8]]
            if seq == unit_down:
                n = 8
            elif seq[:7] == unit_plain:
                n = 7
            else:
                raise DlibModelError(f"unexpected layer sequence at layer {i + 5}: {seq}")
            group = body[i:i + n]
            w1 = group[0].params["weight"]
            stride = group[0].config["stride"][0]
            units.append((w1.shape[1], w1.shape[0], stride, n == 8))
            parsed.append(group)
            i += n
        stem = layers[1].params["weight"]
        net = cls(units, stem_channels=stem.shape[0], embed_dim=layers[-1].params["weight"].shape[0],
                  mean_rgb=tuple(layers[0].config["mean_rgb"]))
        state = {"stem.weight": stem, "stem.bias": layers[1].params["bias"],
                 "stem_affine.gamma": layers[2].params["gamma"], "stem_affine.beta": layers[2].params["beta"],
                 "fc.weight": layers[-1].params["weight"], "mean_rgb": np.asarray(net.mean_rgb)}
        for j, group in enumerate(parsed):
            for name, layer in (("conv1", group[0]), ("conv2", group[3])):
                state[f"units.{j}.{name}.weight"] = layer.params["weight"]
                state[f"units.{j}.{name}.bias"] = layer.params["bias"]
            for name, layer in (("aff1", group[1]), ("aff2", group[4])):
                state[f"units.{j}.{name}.gamma"] = layer.params["gamma"]
                state[f"units.{j}.{name}.beta"] = layer.params["beta"]
        net.load_state_dict({k: torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(net.state_dict()[k].shape)
                             for k, v in state.items()})
        return net.eval()


# -- build once, then load the cached safetensors ---------------------------------------------------------------------
def cache_dir() -> Path:
    """Where converted weights live: ``$LEGATO_CACHE_DIR``, else ``$XDG_CACHE_HOME/legato``, else ~/.cache/legato."""
    if os.environ.get("LEGATO_CACHE_DIR"):
        return Path(os.environ["LEGATO_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "legato"


def load_dlib_resnet(dat_path: str | Path | None = None, cache: str | Path | None = None) -> DlibResNet:
    """The frozen torch port of dlib's face ResNet, built from the installed package's ``.dat`` on first use and
    loaded from the safetensors cache afterwards (the cache records the source file's sha256, so a different file
    rebuilds it)."""
    src = Path(dat_path) if dat_path is not None else dlib_models_dir() / MODEL_FILE
    if not src.is_file():
        raise DlibModelError(f"dlib model file not found: {src}")
    cached = Path(cache) if cache is not None else cache_dir() / CACHE_NAME
    digest = file_sha256(src)
    net = None
    if cached.is_file():
        from safetensors import safe_open

        with safe_open(str(cached), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("source_sha256") == digest:
            net = DlibResNet([tuple(u) for u in json.loads(meta["units"])], int(meta["stem_channels"]),
                             int(meta["embed_dim"]))
            net.load_state_dict(load_file(str(cached)))
    if net is None:
        net = DlibResNet.from_dlib_layers(read_dlib_net(src))
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp),
                  metadata={"source_sha256": digest, "source": src.name, "units": json.dumps(net.units_config),
                            "stem_channels": str(net.stem.out_channels), "embed_dim": str(net.fc.out_features)})
        os.replace(tmp, cached)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
