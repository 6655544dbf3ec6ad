"""scripts/dial_path_staging.py: staged ways to the substitute (categories first, one by one, last) and their table."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_points_along_a_polyline_are_evenly_spaced_and_end_at_its_ends(load_script):
    m = load_script("dial_path_staging")
    points = [torch.tensor([0.0, 0.0]), torch.tensor([3.0, 0.0]), torch.tensor([3.0, 1.0])]
    lat, length = m.along(points, 9)
    assert length == pytest.approx(4.0)
    assert torch.allclose(lat[0], points[0]) and torch.allclose(lat[-1], points[-1])
    steps = (lat[1:] - lat[:-1]).norm(dim=1)
    assert torch.allclose(steps, torch.full_like(steps, 0.5), atol=1e-5)  # 4 units in 8 equal steps
    assert torch.allclose(lat[6], torch.tensor([3.0, 0.0]))  # the corner is 3/4 of the way


def test_categories_switch_at_the_waypoints_and_only_those_that_differ(embedded, load_script):
    from legato_core.faceworld import sample_identities
    from legato_core.faceworld.factors import identity_vector

    m = load_script("dial_path_staging")
    sl = m.category_slices()
    e = identity_vector(sample_identities(list(range(100_600, 100_640))))
    hair = e[:, sl["hair_style"]].argmax(1)
    plain = (e[:, sl["glasses"]].argmax(1) == 0) & (e[:, sl["mole"]][:, 0] < 0)  # no glasses, no mole
    # two people who differ in hair style, neither with glasses or a mole
    pairs = [(i, j) for i in range(40) for j in range(40) if hair[i] != hair[j] and plain[i] and plain[j]]
    i, j = pairs[0]
    gen = embedded.generator
    with torch.no_grad():
        w_u, w_s = gen.map_identity(e[i:i + 1])[0], gen.map_identity(e[j:j + 1])[0]
        straight = m.waypoints(embedded, w_u, e[i], e[j], w_s, "straight")
        first = m.waypoints(embedded, w_u, e[i], e[j], w_s, "categories_first")
        one_by_one = m.waypoints(embedded, w_u, e[i], e[j], w_s, "categories_one_by_one")
        last = m.waypoints(embedded, w_u, e[i], e[j], w_s, "categories_last")
    assert len(straight) == 2 and torch.equal(straight[0], w_u) and torch.equal(straight[1], w_s)
    differ = 1 + bool((e[i, sl["facial_hair"]] != e[j, sl["facial_hair"]]).any())
    assert len(first) == 3 and len(last) == 3 and len(one_by_one) == 2 + differ
    hybrid = e[i].clone()
    for name in ("hair_style", "facial_hair", "glasses", "glasses_color", "mole"):
        hybrid[sl[name]] = e[j, sl[name]]
    # the exact factors have no inversion residual: the waypoint is the mapping of the hybrid person
    assert torch.allclose(first[1], gen.map_identity(hybrid[None])[0], atol=1e-5)


def test_the_table_counts_paths_that_stay_on_the_manifold_by_each_reading(load_script):
    m = load_script("dial_path_staging")

    def row(lowest, from_quarter, at_dial):
        return {"manifold_db_min": lowest, "manifold_db_min_arc": from_quarter, "manifold_db_min_pixel_dial": at_dial,
                "judge_monotone": True, "arcface_monotone": True, "judge_evenness": 1.5, "pixel_evenness": 1.2,
                "length": 2.0}

    people = [{"paths": {k: row(35.0, 37.0, 36.5) for k in m.PATHS}},
              {"paths": {k: row(30.0, 33.0, 36.0) for k in m.PATHS}}]
    summary = m.summarise(people)
    assert summary["straight"]["manifold_36_all"] == 0 and summary["straight"]["manifold_36_arc"] == 1
    assert summary["straight"]["manifold_36_pixel_dial"] == 2 and summary["straight"]["manifold_min_lowest"] == 30.0
    table = m.markdown(summary, 2, "cmd")
    assert "| straight | 0/2 | 1/2 | 2/2 | 32.5 / 30.0 | 2/2 | 2/2 | 1.50 | 1.20 | 2.00 |" in table


def test_the_script_refuses_evaluation_ids():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "dial_path_staging.py"), "--first-identity",
                          "1000000", "--count", "1"], capture_output=True, text=True)
    assert run.returncode != 0 and "validation ids only" in run.stderr
