"""scripts/dial_evenness_bound.py: how even a dial paced by arcface alone can be for the judge."""

import numpy as np


def test_a_dial_paced_by_a_curve_is_even_for_that_curve_and_not_for_a_curve_that_falls_elsewhere(load_script):
    m = load_script("dial_evenness_bound")
    s = np.linspace(0, 1, 33)
    late = 1 - s**3  # falls mostly at the end of the path
    assert m.evenness(m.judge_on_dial(s, 1 - s)) < 1.01  # the raw knob on a linear curve
    assert m.evenness(m.judge_on_dial(s, late)) > 2.0
    assert m.evenness(m.judge_on_dial(m.pace_of(late), late)) < 1.1  # paced by the curve itself


def test_the_table_has_the_raw_knob_the_arcface_paces_and_the_two_references(load_script):
    m = load_script("dial_evenness_bound")
    s = np.linspace(0, 1, 33)
    paths = [{"arcface": list(1 - 1.2 * s), "judge": list(1 - s**2)}, {"arcface": list(1 - s), "judge": list(1 - s)}]
    rows = m.table(paths)
    names = [r["pace"] for r in rows]
    assert names[0].startswith("path fraction") and names[-1].startswith("the judge's own curve")
    assert len(rows) == 2 + len(m.POWERS) * len(m.FLOORS) + 1
    assert rows[-1]["le_1_5"] == 2  # the oracle is even for every path
    assert "| path fraction (the raw knob) | 1/2 |" in m.markdown(rows, "cmd")
