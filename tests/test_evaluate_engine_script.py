"""scripts/evaluate_engine.py: the acceptance run whose reports are committed in docs/engine_reports."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_reports_name_their_files_relative_to_the_repository():
    spec = importlib.util.spec_from_file_location("evaluate_engine", ROOT / "scripts" / "evaluate_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.in_repo(ROOT / "docs" / "engine_reports" / "1.json") == "docs/engine_reports/1.json"
    assert module.in_repo(Path("/tmp/elsewhere/1.json")) == "/tmp/elsewhere/1.json"
