"""Contact sheet of a factor-generator checkpoint against the face world's truth (validation ids, true factors).

    python scripts/factor_generator_sheet.py checkpoints/factor_generator \
        checkpoints/factor_generator/validation_sheet.png

Pairs of columns: the face world's image, then the checkpoint's EMA render of the same person and view from the
exact factors (no inversion). Validation ids 190,000+ (never the evaluation range).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from legato_core import faceworld  # noqa: E402
from legato_core.generator.factor_training import load_checkpoint_generator, validation_batch  # noqa: E402


def main() -> None:
    directory, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    g, state = load_checkpoint_generator(directory)
    factors, views, truth, _ = validation_batch(8)
    with torch.no_grad():
        renders = g.render(g.map_identity(factors), views)
    grid = torch.stack([truth, renders], 1).flatten(0, 1)
    faceworld.save_png(faceworld.contact_sheet(grid, rows=4, upscale=3), out)
    print(f"wrote {out} (step {state['step']})")


if __name__ == "__main__":
    main()
