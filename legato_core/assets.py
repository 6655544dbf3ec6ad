"""Where shipped weights live: ``assets/`` at the repository root, or ``$LEGATO_ASSETS``."""

from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    env = os.environ.get("LEGATO_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "assets"


def asset_path(*parts: str) -> Path:
    path = assets_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"missing asset {path}; it is made by a script in scripts/ (see the model card in assets/)"
        )
    return path
