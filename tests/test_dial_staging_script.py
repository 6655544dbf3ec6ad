"""scripts/dial_path_staging.py: the table of staged ways to the substitute (the ways themselves: test_paths.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_counts_paths_that_stay_on_the_manifold_by_each_reading(load_script):
    m = load_script("dial_path_staging")

    def row(lowest, from_quarter, at_dial):
        return {"manifold_db_min": lowest, "manifold_db_min_arc": from_quarter, "manifold_db_min_pixel_dial": at_dial,
                "judge_monotone": True, "arcface_monotone": True, "judge_evenness": 1.5, "pixel_evenness": 1.2,
                "length": 2.0}

    from legato_core.unlearning.paths import PATHS

    people = [{"paths": {k: row(35.0, 37.0, 36.5) for k in PATHS}},
              {"paths": {k: row(30.0, 33.0, 36.0) for k in PATHS}}]
    summary = m.summarise(people)
    assert summary["straight"]["manifold_36_all"] == 0 and summary["straight"]["manifold_36_arc"] == 1
    assert summary["straight"]["manifold_36_pixel_dial"] == 2 and summary["straight"]["manifold_min_lowest"] == 30.0
    table = m.markdown(summary, 2, "cmd")
    assert "| straight | 0/2 | 1/2 | 2/2 | 32.5 / 30.0 | 2/2 | 2/2 | 1.50 | 1.20 | 2.00 |" in table


def test_the_script_refuses_evaluation_ids():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "dial_path_staging.py"), "--first-identity",
                          "1000000", "--count", "1"], capture_output=True, text=True)
    assert run.returncode != 0 and "validation ids only" in run.stderr
