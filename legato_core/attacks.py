"""Attacks on forgetting: with the person's photo and the unlearned model, can someone get the person back?

The attacker has the model and its own inversion (pixels plus the loss network's features and identity, as the
backend inverts) and may use the loss network (arcface), never the judge; the judge only scores what the attacker
reaches. Every attack runs twice, on the unlearned model and on the base, so each figure has its reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .identity.model import IdentityModel
from .metrics import Knob

ATTACKS = {
    "reinvert": "(a) the photo the engine trained on, inverted into the model",
    "unseen_photos": "(b) other photos of the person, never seen by the engine, inverted into the model",
    "encoder_guess": "(c) the inversion encoder's guess alone, no optimisation",
    "warm_start": "(d) from the person's original latent, optimised toward the photo",
}


@dataclass
class AttackConfig:
    steps: int = 200  # refinement steps of the backend's own inversion (its default is a few dozen)
    check_every: int = 25  # the judge scores the attacker's render this often; the best counts


def judge_attack(model, photos: torch.Tensor, judge: IdentityModel, steps: int,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None, check_every: int = 25) -> dict:
    """Invert ``photos`` into ``model`` (``model.invert`` with ``steps`` refinement steps, from ``init`` when given)
    and score the attacker's renders against each photo by the judge: ``best`` over checkpoints, and ``final``;
    ``best_render`` holds the renders that scored ``best`` (what the attacker would show)."""
    with torch.no_grad():
        e = judge.embed(photos)
    best = torch.full((len(photos),), -1.0)
    best_render = torch.zeros_like(photos)

    def score(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = model.render(w, v)
            s = (judge.embed(images) * e).sum(1)
        better = s > best
        best_render[better] = images[better].to(best_render)
        best.copy_(torch.maximum(best, s))
        return s

    def check(step: int, w: torch.Tensor, v: torch.Tensor) -> None:
        if (step + 1) % check_every == 0:
            score(w, v)

    w, v = model.invert(photos, refine_steps=steps, init=init, on_step=check if steps else None)
    final = score(w, v)
    return {"best": best.tolist(), "final": final.tolist(), "best_render": best_render}


def attack_model(model, photo: torch.Tensor, original: tuple[torch.Tensor, torch.Tensor], judge: IdentityModel,
                 other_photos: torch.Tensor | None = None, config: AttackConfig | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Attacks (a)-(d) on one model (a backend, or one under an adapter or fine-tuned): per attack, the attacker's
    best judge similarity to each photo. (b) runs only with ``other_photos``."""
    config = config or AttackConfig()
    runs = {"reinvert": (photo, config.steps, None), "unseen_photos": (other_photos, config.steps, None),
            "encoder_guess": (photo, 0, None), "warm_start": (photo, config.steps, original)}
    out = {}
    for attack, (photos, steps, init) in runs.items():
        if photos is None:
            continue
        if progress is not None:
            progress(attack)
        out[attack] = judge_attack(model, photos, judge, steps, init, config.check_every)["best"]
    return out


def attack_suite(knob: Knob, s: float, photo: torch.Tensor, original: tuple[torch.Tensor, torch.Tensor],
                 judge: IdentityModel, other_photos: torch.Tensor | None = None,
                 config: AttackConfig | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Attacks (a)-(d) on ``knob`` at ``s`` (the unlearned model) and on the base model (``knob.at(None)``).

    ``photo``: the (1, 3, H, W) image the engine trained on; ``original``: the (latent, view) it was inverted to
    before forgetting; ``other_photos``: the person's photos the engine never saw (attack (b); skipped if None).
    Per attack: the attacker's best judge similarity on each model (the most over photos for (b)), and whether
    it stays below the judge's same-person threshold on the unlearned model."""
    config = config or AttackConfig()
    out: dict = {"threshold": judge.threshold, "steps": config.steps, "attacks": {}}
    for name, where in (("unlearned", s), ("base", None)):
        with knob.at(where) as model:
            said = None if progress is None else (lambda what, n=name: progress(f"{what} on the {n} model"))
            for attack, best in attack_model(model, photo, original, judge, other_photos, config, said).items():
                entry = out["attacks"].setdefault(attack, {"what": ATTACKS[attack]})
                entry[name], entry[f"{name}_each"] = max(best), best
    for entry in out["attacks"].values():
        entry["held"] = entry["unlearned"] < judge.threshold
    out["config"] = asdict(config)
    return out
