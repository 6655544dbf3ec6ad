"""scripts/evaluate_engine.py: the acceptance run whose reports are committed in docs/engine_reports."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("evaluate_engine", ROOT / "scripts" / "evaluate_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_reports_name_their_files_relative_to_the_repository():
    module = _script()
    assert module.in_repo(ROOT / "docs" / "engine_reports" / "1.json") == "docs/engine_reports/1.json"
    assert module.in_repo(Path("/tmp/elsewhere/1.json")) == "/tmp/elsewhere/1.json"


def test_recalibrate_measures_a_saved_adapters_dial_again_without_touching_its_weights(tmp_path):
    import dataclasses
    import json

    import pytest
    import torch

    from legato_core.adapters import ODEAdapter, ODEConfig
    from legato_core.backends.embedded import EmbeddedFaceBackend
    from legato_core.unlearning.calibration import CalibrationConfig

    backend = EmbeddedFaceBackend.from_pretrained(None)
    adapter = ODEAdapter.for_model(backend, ["w"], ODEConfig(hidden=8), {"target": {"kind": "average"}})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    adapter.save(tmp_path / "7.safetensors")
    weights = {k: v.clone() for k, v in adapter.state_dict().items()}
    (tmp_path / "7.json").write_text(json.dumps({"judge": "embedded", "id_target": 0.1}))

    rep = _script().recalibrate_target(7, tmp_path, None)

    assert rep["id_target"] == 0.1  # the rest of the report is kept
    assert len(rep["dial"]["judge_curve"]) == 17 and rep["dial"]["judge_curve"][0] == pytest.approx(1.0, abs=1e-4)
    assert rep["recalibrated"]["calibration"] == dataclasses.asdict(CalibrationConfig())  # today's calibration
    saved = ODEAdapter.load(tmp_path / "7.safetensors", backend)
    assert saved.dial is not None and list(saved.dial.t) == rep["dial_map"]["t"]
    for k, v in saved.state_dict().items():
        torch.testing.assert_close(v, weights[k])
    assert json.loads((tmp_path / "7.json").read_text())["dial_map"] == rep["dial_map"]


def test_recalibrate_refuses_a_report_judged_by_another_network(tmp_path):
    import json

    import pytest

    (tmp_path / "7.json").write_text(json.dumps({"judge": "insightface"}))
    with pytest.raises(SystemExit, match="judged by 'insightface'"):
        _script().recalibrate_target(7, tmp_path, None)
