"""scripts/ideal_dials.py: the table that compares ways to the substitute without training an adapter."""

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_the_way_around_the_average_face_keeps_its_distance_from_it_where_the_chord_does_not():
    from legato_core.unlearning.paths import around_average

    avg = torch.zeros(4)
    a, b = torch.tensor([2.0, 0, 0, 0]), torch.tensor([0, 2.0, 0, 0])
    points = around_average(avg, a, b, points=9)
    assert torch.equal(points[0], a) and torch.equal(points[-1], b)
    radii = torch.stack([(p - avg).norm() for p in points])
    assert torch.allclose(radii, torch.full((9,), 2.0), atol=1e-5)
    assert float(((a + b) / 2).norm()) < 1.5  # the straight line's midpoint falls inside


def test_the_summary_counts_each_bar_per_way(load_script):
    m = load_script("ideal_dials")

    def way(ev, mono, manifold):
        return {"judge_curve": [1.0, 0.5, -0.1], "evenness": ev, "monotone": mono, "pixel_evenness": 1.4,
                "manifold_db": {"0.5": manifold, "1.0": 40.0}, "sharpness_min": 0.9, "reach_db": 50.0,
                "length": 2.0}

    people = [{"identity": 1, "ways": {"straight": way(1.4, True, 35.0), "one_by_one": way(2.2, True, 39.0)}},
              {"identity": 2, "ways": {"straight": way(1.8, False, 37.0), "one_by_one": way(1.6, True, 41.0)}}]
    s = m.summarise(people)["ways"]
    assert s["straight"]["judge_evenness_le_1_5"] == 1 and s["straight"]["monotone"] == 1
    assert s["straight"]["manifold_ge_36"] == 1 and s["one_by_one"]["manifold_ge_36"] == 2
    assert s["one_by_one"]["judge_evenness_le_2_0"] == 1 and "around_average" not in s
    assert "| straight to the nearest substitute, the whole knob (the default to session 27) | 1.60 | 1/2 | 2/2 |" \
        in m.markdown(m.summarise(people), "cmd")
    both = m.markdown(m.summarise(people), "cmd", every_way=m.summarise(people[:1]))
    assert "The 1 people drawn each of the first four ways:" in both
    assert "the default to session 27) | 1.40 | 1/1 |" in both


def test_the_script_refuses_evaluation_ids_and_unknown_ways():
    script = str(ROOT / "scripts" / "ideal_dials.py")
    run = subprocess.run([sys.executable, script, "--first-identity", "1000000", "--count", "1"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "validation ids only" in run.stderr
    run = subprocess.run([sys.executable, script, "--ways", "zigzag"], capture_output=True, text=True)
    assert run.returncode != 0 and "unknown ways" in run.stderr
