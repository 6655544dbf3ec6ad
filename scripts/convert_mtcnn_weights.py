"""Rebuild ``assets/mtcnn/mtcnn.safetensors`` from the facenet-pytorch 2.6.0 wheel (MIT).

The wheel is only read, never installed (it pins an old torch and imports torchvision):

    pip download facenet-pytorch==2.6.0 --no-deps -d /tmp/fp
    python scripts/convert_mtcnn_weights.py /tmp/fp/facenet_pytorch-2.6.0-py3-none-any.whl

The wheel's ``data/{pnet,rnet,onet}.pt`` are plain state dicts; they are read with ``weights_only=True`` (no
arbitrary pickle code runs), checked against our networks (strict load) and written as one safetensors file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legato_core.faces.networks import WEIGHTS_FILE, MTCNNNetworks

STAGES = ("pnet", "rnet", "onet")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel", type=Path, help="facenet_pytorch-2.6.0-py3-none-any.whl")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "mtcnn")
    args = ap.parse_args(argv)
    print(f"wheel sha256 {hashlib.sha256(args.wheel.read_bytes()).hexdigest()}")
    state: dict[str, torch.Tensor] = {}
    with zipfile.ZipFile(args.wheel) as wheel:
        for stage in STAGES:
            raw = wheel.read(f"facenet_pytorch/data/{stage}.pt")
            sd = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
            state.update({f"{stage}.{k}": v.float().contiguous() for k, v in sd.items()})
    MTCNNNetworks().load_state_dict(state, strict=True)  # every tensor has its place, shapes match
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out / WEIGHTS_FILE), metadata={"source": "facenet-pytorch 2.6.0 wheel, data/*.pt",
                                                             "licence": "MIT, Copyright (c) 2019 Timothy Esler"})
    n = sum(v.numel() for v in state.values())
    print(f"wrote {args.out / WEIGHTS_FILE}: {len(state)} tensors, {n} parameters")


if __name__ == "__main__":
    main()
