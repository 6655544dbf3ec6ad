"""The generator's model card is written from saved evaluations: every figure in it comes from a JSON file."""

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def card_writer(root: Path):
    spec = importlib.util.spec_from_file_location("write_model_cards", ROOT / "scripts" / "write_model_cards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = root
    return module


def test_the_factor_generator_card_states_each_bar_and_the_thin_parts_from_the_jsons(tmp_path):
    (tmp_path / "assets" / "generator").mkdir(parents=True)
    shutil.copy(ROOT / "assets" / "generator" / "config.json", tmp_path / "assets" / "generator" / "config.json")
    measured = json.loads((ROOT / "docs" / "generator_evaluation.json").read_text())
    measured["central_psnr_db"] = 28.5  # a figure that passes its bar
    measured["sharpness_ratio"] = 0.5  # and one that does not
    measured = {k: v for k, v in measured.items() if not k.endswith(("_recovery", "_faces")) and k != "reference"}
    (tmp_path / "m.json").write_text(json.dumps(measured))
    parts = {"identities": 7, **{f"{k}_faces": 3 for k in ("glasses", "facial_hair", "mole", "freckles")},
             "glasses_recovery": 0.123, "facial_hair_recovery": 0.5, "mole_recovery": -0.2, "freckles_recovery": 1.0}
    (tmp_path / "parts.json").write_text(json.dumps(parts))
    card_writer(tmp_path).factor_generator_card(tmp_path / "m.json", tmp_path / "parts.json")
    text = (tmp_path / "assets" / "generator" / "MODEL_CARD.md").read_text()
    assert "| central 32×32 PSNR of that re-render | 28.50 dB | ≥ 28.00 dB | met |" in text
    assert "| sharpness: mean squared gradient, renders ÷ truth | 0.500 | ≥ 0.850 | **not met** |" in text
    assert "| glasses (frames and lenses) | 3 | 0.12 |" in text and "| mole | 3 | -0.20 |" in text
    card_writer(tmp_path).factor_generator_card(tmp_path / "m.json")  # without parts: no table
    assert "Thin parts" not in (tmp_path / "assets" / "generator" / "MODEL_CARD.md").read_text()


def test_an_evaluation_timed_beside_a_named_reference_says_so_and_brings_its_own_thin_parts(tmp_path):
    (tmp_path / "assets" / "generator").mkdir(parents=True)
    shutil.copy(ROOT / "assets" / "generator" / "config.json", tmp_path / "assets" / "generator" / "config.json")
    measured = json.loads((ROOT / "docs" / "generator_evaluation.json").read_text())
    measured.update({"reference": "runs/old_generator", "identities": 7,
                     **{f"{k}_faces": 2 for k in ("glasses", "facial_hair", "mole", "freckles")},
                     "glasses_recovery": 0.25, "facial_hair_recovery": 0.5, "mole_recovery": 0.0,
                     "freckles_recovery": 0.1})
    (tmp_path / "m.json").write_text(json.dumps(measured))
    card_writer(tmp_path).factor_generator_card(tmp_path / "m.json")
    text = (tmp_path / "assets" / "generator" / "MODEL_CARD.md").read_text()
    assert "--reference runs/old_generator --identities 7 --json" in text
    assert "| glasses (frames and lenses) | 2 | 0.25 |" in text and "the evaluation run above" in text


def test_the_card_says_whether_a_discriminator_trained_the_generator(tmp_path):
    (tmp_path / "assets" / "generator").mkdir(parents=True)
    config = json.loads((ROOT / "assets" / "generator" / "config.json").read_text())
    measured = tmp_path / "m.json"
    measured.write_text((ROOT / "docs" / "generator_evaluation.json").read_text())
    card = tmp_path / "assets" / "generator" / "MODEL_CARD.md"
    config["losses"] = {"gradient_weight": 3.0, "adversarial_weight": 0.0}
    (tmp_path / "assets" / "generator" / "config.json").write_text(json.dumps(config))
    card_writer(tmp_path).factor_generator_card(measured)
    assert "No discriminator." in card.read_text() and "patch discriminator" not in card.read_text()
    config["losses"]["adversarial_weight"], config["adversarial_start"] = 0.05, 27250
    (tmp_path / "assets" / "generator" / "config.json").write_text(json.dumps(config))
    card_writer(tmp_path).factor_generator_card(measured)
    assert "From step 27,250 a patch discriminator's hinge term (weight 0.05" in card.read_text()

