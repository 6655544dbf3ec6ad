"""The command line, end to end on small inputs."""

import json

import pytest
import torch

from legato_core.cli import main


def test_faceworld_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["faceworld", "sheet", "--out", str(out), "--identities", "2", "--views", "3"]) == 0
    assert out.stat().st_size > 1000


def test_generator_sheet_puts_the_truth_of_every_new_view_beside_its_render(tmp_path, capsys):
    from PIL import Image

    from legato_core import faceworld

    out = tmp_path / "generator.png"
    assert main(["generator", "sheet", "--out", str(out), "--identities", "2", "--views", "2"]) == 0
    sheet = Image.open(out)
    six_columns = faceworld.contact_sheet(torch.zeros(2 * 6, 3, 64, 64), rows=2, upscale=2)
    assert sheet.size == six_columns.size  # image, inversion, then (truth, render) for each of the 2 new views
    assert "for each new view" in capsys.readouterr().out


def test_generator_sheet_can_fill_its_rows_with_faces_that_show_each_thin_part(tmp_path, capsys):
    from PIL import Image

    from legato_core import faceworld
    from legato_core.faceworld.parts import identities_with_parts

    out = tmp_path / "parts.png"
    assert main(["generator", "sheet", "--out", str(out), "--thin-parts", "1", "--views", "1"]) == 0
    four_rows = faceworld.contact_sheet(torch.zeros(4 * 4, 3, 64, 64), rows=4, upscale=2)
    assert Image.open(out).size == four_rows.size  # glasses, facial hair, mole, freckles: one face each
    assert str(identities_with_parts(1_000_000, 1)) in capsys.readouterr().out


def test_identity_evaluate_refuses_training_ranges_for_reports(capsys):
    assert main(["identity", "evaluate", "--model", "judge", "--identities", "5", "--first-identity", "10"]) == 2
    assert "evaluation ids must be >= 1,000,000" in capsys.readouterr().err


def test_identity_evaluate_json(capsys):
    args = ["identity", "evaluate", "--model", "arcface", "--identities", "20", "--views", "3",
            "--first-identity", "1000000", "--json"]
    assert main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert {"roc_auc", "tar_at_far_1e-3", "threshold", "seconds"} <= set(rep)
    assert rep["roc_auc"] > 0.9


@pytest.fixture(scope="module")
def forgotten(tmp_path_factory):
    """One adapter made by the CLI (5 steps, with its report), shared by the tests that only need some adapter."""
    folder = tmp_path_factory.mktemp("cli-forget")
    adapter, report = folder / "a.safetensors", folder / "r.json"
    assert main(["forget", "--identity", "200030", "--out", str(adapter), "--report", str(report),
                 "--steps", "5", "--quiet"]) == 0
    return adapter, report


def test_forget_then_render(forgotten, tmp_path, capsys):
    (adapter, report), png = forgotten, tmp_path / "t.png"
    rep = json.loads(report.read_text())
    for key in ("id_target", "id_others", "retention_mean", "retention_p5", "fd_judge", "seconds",
                "trainable_fraction", "threshold", "curve"):
        assert key in rep
    assert len(rep["curve"]) == 9 and rep["curve"][0][0] == 0
    for dial in (rep["dial"], rep["dial_raw"]):  # the slider as calibrated, and the raw knob t = u T
        assert len(dial["judge_curve"]) == 17 and dial["judge_curve"][0] == pytest.approx(1.0, abs=1e-5)
    assert rep["dial_map"]["t"][0] == 0 and rep["dial_raw"]["knob"][-1] == pytest.approx(1.6)
    assert set(rep["dial"]["manifold_db"]) == {"0.25", "0.5", "0.75", "0.875", "1.0"}
    assert rep["target"] == "substitute" and rep["target_stop_fraction"] is None  # only an extrapolated target stops
    assert main(["render", "--adapter", str(adapter), "--t", "0.8", "--identity", "200030", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert main(["render", "--adapter", str(adapter), "--u", "0.5", "--identity", "200030", "--out", str(png)]) == 0
    assert "u=0.5 (t=" in capsys.readouterr().out


def test_forget_flags_and_a_config_file_set_the_runs_target(tmp_path):
    """What the flags do to the settings (the search they switch on is tested in test_engine.py)."""
    from legato_core.cli import build_parser, forget_config

    def settings(*flags):
        return forget_config(build_parser().parse_args(["forget", "--identity", "200032", "--out", "a.st", *flags]))

    default = settings()
    assert default.target.kind == "substitute" and default.robust is None and default.steps == 250
    stopped = settings("--target", "extrapolated", "--stop-similarity", "0.5", "--steps", "7", "--seed", "3")
    assert (stopped.target.kind, stopped.target.stop_similarity, stopped.steps, stopped.seed) == (
        "extrapolated", 0.5, 7, 3)
    config = tmp_path / "config.json"  # the same kind of settings from a file; flags go over it
    config.write_text(json.dumps({"target": {"kind": "extrapolated", "stop_similarity": None}, "lr": 0.01}))
    from_file = settings("--config", str(config))
    assert (from_file.target.kind, from_file.target.stop_similarity, from_file.lr) == ("extrapolated", None, 0.01)
    assert settings("--config", str(config), "--stop-similarity", "-0.2").target.stop_similarity == -0.2
    assert settings("--robust").robust is not None


@pytest.mark.parametrize("bad", ["1", "-3", "far"])
def test_forget_refuses_a_stop_similarity_that_is_not_a_cosine(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_:
        main(["forget", "--identity", "1", "--out", str(tmp_path / "a.safetensors"), "--stop-similarity", bad])
    assert exit_.value.code == 2 and "expected a cosine" in capsys.readouterr().err


def test_render_refuses_t_outside_range(forgotten, tmp_path, capsys):
    adapter, _ = forgotten
    assert main(["render", "--adapter", str(adapter), "--t", "9", "--identity", "1", "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "t must be in" in capsys.readouterr().err


def test_generator_evaluate_times_renders_beside_the_reference_it_is_given(monkeypatch, capsys):
    import legato_core.cli as cli
    import legato_core.generator.evaluation as evaluation

    seen = {}
    monkeypatch.setattr(cli, "_load_backend", lambda model=None: f"backend:{model}")

    def fake_evaluate(backend, identities, first, progress, reference):
        seen.update(backend=backend, reference=reference)
        return {"identities": identities}

    monkeypatch.setattr(evaluation, "evaluate_generator", fake_evaluate)
    assert main(["generator", "evaluate", "--model-path", "new", "--reference", "old", "--json"]) == 0
    assert seen == {"backend": "backend:new", "reference": "backend:old"}
    assert json.loads(capsys.readouterr().out)["reference"] == "old"  # the JSON says what it was timed beside
    seen.clear()
    assert main(["generator", "evaluate", "--model-path", "new", "--json"]) == 0
    assert seen == {"backend": "backend:new", "reference": "backend:None"}  # the shipped generator
    seen.clear()
    assert main(["generator", "evaluate", "--model-path", "new", "--no-reference", "--json"]) == 0
    assert seen["reference"] is None
