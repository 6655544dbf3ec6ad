"""The attack suite: an attacker with the person's photo and the model tries to bring a forgotten person back.
Every attack runs on the unlearned model and on the base, and only the judge scores what the attacker reaches."""

from __future__ import annotations

import json

import pytest
import torch

from legato_core import faceworld
from legato_core.adapters import ODEAdapter
from legato_core.attacks import ATTACKS, AttackConfig, attack_suite, judge_attack
from legato_core.cli import main
from legato_core.identity.model import load_identity_model
from legato_core.metrics import AdapterKnob

PERSON = 200_031  # a development id: unit tests never touch evaluation ids


@pytest.fixture(scope="module")
def world():
    from legato_core.backends.embedded import EmbeddedFaceBackend

    torch.set_num_threads(1)
    backend = EmbeddedFaceBackend.from_pretrained()
    photo = faceworld.render([PERSON], 0)
    return backend, photo, backend.invert(photo), load_identity_model("judge")


def _pushed_adapter(backend, scale: float) -> ODEAdapter:
    """An adapter whose field pushes every latent one fixed way: a crude stand-in for a trained one."""
    adapter = ODEAdapter.for_model(backend, ["w"])
    with torch.no_grad():
        last = [p for p in adapter.parameters() if p.dim() == 1][-1]  # the output layer's bias
        last.copy_(scale * torch.randn(last.shape, generator=torch.Generator().manual_seed(0)))
    return adapter


def test_inversion_can_start_from_a_given_latent_and_reports_every_step(world):
    backend, photo, (w, v), _ = world
    seen = []
    w0, v0 = backend.invert(photo, refine_steps=0, init=(w + 1.0, v))
    assert torch.equal(w0, w + 1.0) and torch.equal(v0, v)  # no steps: the start itself
    backend.invert(photo, refine_steps=4, init=(w, v), on_step=lambda step, *_: seen.append(step))
    assert seen == [0, 1, 2, 3]


def test_an_untouched_model_gives_the_attacker_what_the_base_gives(world):
    backend, photo, original, judge = world
    identity_adapter = ODEAdapter.for_model(backend, ["w"])  # zero-initialised: exactly the base model
    rep = attack_suite(AdapterKnob(backend, [identity_adapter]), 1.6, photo, original, judge,
                       config=AttackConfig(steps=4, check_every=2))
    assert set(rep["attacks"]) == {"reinvert", "encoder_guess", "warm_start"}  # no other photos: no attack (b)
    for entry in rep["attacks"].values():
        assert entry["unlearned"] == pytest.approx(entry["base"], abs=1e-5)
        assert entry["held"] == (entry["unlearned"] < judge.threshold)


def test_a_model_that_moves_everyone_lowers_what_the_encoders_guess_reaches(world):
    backend, photo, original, judge = world
    knob = AdapterKnob(backend, [_pushed_adapter(backend, 3.0)])
    others = faceworld.render([PERSON] * 2, [1, 2])
    rep = attack_suite(knob, 1.6, photo, original, judge, others, AttackConfig(steps=3, check_every=1))
    assert list(rep["attacks"]) == list(ATTACKS)
    guess = rep["attacks"]["encoder_guess"]
    assert guess["unlearned"] < guess["base"] - 0.1
    assert len(rep["attacks"]["unseen_photos"]["unlearned_each"]) == 2


def test_the_best_over_checkpoints_is_at_least_the_final_render(world):
    backend, photo, _, judge = world
    res = judge_attack(backend, photo, judge, steps=6, check_every=2)
    assert res["best"][0] >= res["final"][0]


def test_cli_attack_writes_every_attack_with_its_base_figure(world, tmp_path):
    backend, *_ = world
    adapter_path = tmp_path / "a.safetensors"
    _pushed_adapter(backend, 1.0).save(adapter_path)
    out = tmp_path / "attack.json"
    assert main(["attack", "--adapter", str(adapter_path), "--identity", str(PERSON), "--other-views", "1",
                 "--steps", "2", "--threads", "1", "--json", str(out), "--quiet"]) == 0
    rep = json.loads(out.read_text())
    assert set(rep["attacks"]) == set(ATTACKS) and rep["identity"] == PERSON and rep["u"] == 1.0
    for entry in rep["attacks"].values():
        assert {"unlearned", "base", "held", "what"} <= set(entry)


def test_cli_attack_refuses_a_step_count_below_one(world, tmp_path, capsys):
    assert main(["attack", "--adapter", str(tmp_path / "none.safetensors"), "--identity", str(PERSON),
                 "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
