"""The app's "Try to bring them back" picture: the person's photo beside what an attacker got from the model."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .grid import CELL, GAP, _font

CAPTION_H = 40


def attack_picture(photo: Image.Image, attacker: Image.Image, similarity: float, threshold: float) -> Image.Image:
    """Two cells, the photo and the attacker's best render, with the judge's verdict under the second."""
    held = similarity < threshold
    width = 2 * CELL + 3 * GAP
    im = Image.new("RGB", (width, CELL + 2 * GAP + CAPTION_H), "white")
    for i, face in enumerate((photo, attacker)):
        im.paste(face.convert("RGB").resize((CELL, CELL), Image.BICUBIC), (GAP + i * (CELL + GAP), GAP))
    draw, font = ImageDraw.Draw(im), _font(12)
    y = CELL + GAP + 6
    draw.text((GAP, y), "their photo", fill="black", font=font)
    x = 2 * GAP + CELL
    draw.text((x, y), f"attacker got: {similarity:.2f}", fill="black", font=font)
    verdict = "not them: forgetting held" if held else "them again: forgetting broke"
    draw.text((x, y + 16), verdict, fill=(0, 110, 0) if held else (180, 0, 0), font=font)
    return im
