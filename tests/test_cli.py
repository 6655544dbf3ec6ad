"""The command line, end to end on small inputs."""

import json

from legato_core.cli import main


def test_faceworld_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["faceworld", "sheet", "--out", str(out), "--identities", "2", "--views", "3"]) == 0
    assert out.stat().st_size > 1000


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


def test_forget_then_render(tmp_path, capsys):
    adapter, report, png = tmp_path / "a.safetensors", tmp_path / "r.json", tmp_path / "t.png"
    assert main(["forget", "--identity", "200030", "--out", str(adapter), "--report", str(report),
                 "--steps", "5", "--quiet"]) == 0
    rep = json.loads(report.read_text())
    for key in ("id_target", "id_others", "retention_mean", "retention_p5", "fd_judge", "seconds",
                "trainable_fraction", "threshold", "curve"):
        assert key in rep
    assert len(rep["curve"]) == 9 and rep["curve"][0][0] == 0
    assert main(["render", "--adapter", str(adapter), "--t", "0.8", "--identity", "200030", "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_render_refuses_t_outside_range(tmp_path, capsys):
    adapter = tmp_path / "a.safetensors"
    assert main(["forget", "--identity", "200031", "--out", str(adapter), "--steps", "1", "--quiet"]) == 0
    assert main(["render", "--adapter", str(adapter), "--t", "9", "--identity", "1", "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "t must be in" in capsys.readouterr().err
