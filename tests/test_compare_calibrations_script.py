"""scripts/compare_calibrations.py: the table behind the calibration defaults in docs/engine.md."""

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_a_profile_measured_once_gives_each_variant_the_map_of_its_own_measurement(load_script, tiny_backend):
    from legato_core.generator.modeling import ModulatedConv
    from legato_core.unlearning.calibration import knob_knots, profile_knob
    from legato_core.unlearning.paths import DrawnPath

    m = load_script("compare_calibrations")
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # random style weights: the tiny backend's renders then depend on the latent
        for mod in tiny_backend.generator.modules():
            if isinstance(mod, ModulatedConv):
                mod.affine.weight.copy_(torch.randn(mod.affine.weight.shape, generator=g) * 0.3)
    w = tiny_backend.sample_latents(2, torch.Generator().manual_seed(3))
    knob = DrawnPath(tiny_backend, [w[0], w[1]])
    shared = m.profiles(tiny_backend, knob, w[:1], 1.0)
    assert list(shared) == list(m.VARIANTS)
    for name in ("blends and envelopes, cosine", "blends and envelopes, cos^1.75 (default)"):
        cfg = m.VARIANTS[name]
        assert knob_knots(shared[name], cfg) == knob_knots(profile_knob(tiny_backend, knob, w[:1], 1.0, cfg), cfg)


def test_the_table_shows_per_id_figures_for_a_few_ids_and_the_median_for_many(load_script):
    m = load_script("compare_calibrations")
    few = m.table({"a": [(1, 1.4, 1.6, True), (2, 2.2, 1.9, False)]})
    assert "| a | 1.40 / 2.20 | 1/2 | 1/2 | 1.90 | 1/2 |" in few
    many = m.table({"a": [(i, 1.0 + i / 10, 1.5, True) for i in range(12)]})
    assert "| a | median 1.55 | 6/12 | 11/12 | 1.50 | 12/12 |" in many


def test_drawn_ways_are_refused_on_evaluation_ids():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_calibrations.py"), "--drawn",
                          "1000000-1000001"], capture_output=True, text=True)
    assert run.returncode != 0 and "validation ids only" in run.stderr


def test_the_paces_are_compared_over_the_whole_knob_and_the_dial_ends_up_to_each_floor(load_script):
    m = load_script("compare_calibrations")
    assert not any(cfg.end_at_floor for cfg in m.VARIANTS.values()), "the docs table compared paces on the whole knob"
    ends = m.DIAL_ENDS
    assert not ends["whole knob"].end_at_floor and ends["ending at cosine 0 (default)"].end_at_floor
    assert [cfg.identity_floor for name, cfg in ends.items() if name != "whole knob"] == [0.0, 0.1, 0.2]
    rows = m.table({"a": [(1, 1.4, 1.6, True, 0.05), (2, 2.2, 1.9, False, -0.15)]})
    assert "| a | 1.40 / 2.20 | 1/2 | 1/2 | 1.90 | 1/2 | -0.050 / +0.050 |" in rows
