"""scripts/dial_path_monotonicity.py: the table behind "Why some knobs are not monotone" in docs/engine.md."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _path(judge, arcface, views_monotone=8):
    return {"judge": judge, "arcface": arcface, "arcface_views_monotone": views_monotone, "encoder": arcface,
            "distance": 2.0}


def test_a_judge_curve_that_comes_back_is_counted_and_cutting_at_arcface_unrelated_removes_the_rebound(load_script):
    m = load_script("dial_path_monotonicity")
    falls = [1.0 - i / (m.POINTS - 1) for i in range(m.POINTS)]  # 1 -> 0, evenly
    arcface = [1.0 - 1.2 * i / (m.POINTS - 1) for i in range(m.POINTS)]  # crosses 0 at 5/6 of the way
    rebound = [*falls[:-4], 0.05, 0.08, 0.11, 0.14]  # the judge finds the substitute more like the person
    people = [{"identity": 1, "paths": {str(c): _path(falls, arcface) for c in m.CEILINGS}},
              {"identity": 2, "paths": {str(c): _path(rebound, arcface, views_monotone=7) for c in m.CEILINGS}}]
    summary = m.summarise(people)
    assert summary["ceilings"]["-0.1"]["judge_monotone"] == 1 and summary["ceilings"]["-0.1"]["arcface_monotone"] == 2
    assert summary["cut_default_ceiling"]["0.0"]["judge_monotone"] == 2  # the cut comes before the rebound
    assert summary["arcface_every_view_monotone"] == {"judge_monotone": 1, "judge_not_monotone": 0, "of_paths": 1}
    assert summary["encoder_monotone"] == {"judge_monotone": 1, "judge_not_monotone": 1, "of_paths": 2}
    table = m.markdown(summary, "cmd")
    assert "| -0.1 | 1/2 | 2/2 |" in table and "| 0.0 | 2/2 |" in table


def test_other_ceilings_can_be_compared_and_the_first_is_read_as_the_default(load_script):
    m = load_script("dial_path_monotonicity")
    falls = [1.0 - i / (m.POINTS - 1) for i in range(m.POINTS)]
    rebound = [*falls[:-4], 0.05, 0.08, 0.11, 0.14]
    people = [{"identity": 1, "paths": {"0.0": _path(falls, falls), "-0.1": _path(rebound, falls, 7)}}]
    summary = m.summarise(people, (0.0, -0.1))
    assert summary["default_ceiling"] == 0.0 and list(summary["ceilings"]) == ["0.0", "-0.1"]
    assert summary["ceilings"]["0.0"]["judge_monotone"] == 1 and summary["ceilings"]["-0.1"]["judge_monotone"] == 0
    assert summary["arcface_every_view_monotone"]["of_paths"] == 1  # read on the first ceiling's paths
    assert "(ceiling 0.0)" in m.markdown(summary, "cmd")


def test_the_script_refuses_evaluation_ids():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "dial_path_monotonicity.py"), "--first-identity",
                          "1000000", "--count", "1"], capture_output=True, text=True)
    assert run.returncode != 0 and "validation ids only" in run.stderr
