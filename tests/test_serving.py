"""The serving layer's small parts on their own: the page's sentences about composition and the slider's dial, and a
session's folder."""

from dataclasses import dataclass

import pytest
from PIL import Image

from legato_core.adapters import ODEAdapter, ODEConfig
from legato_core.adapters.dial import DialMap
from legato_core.serving import text
from legato_core.serving.errors import StudioError
from legato_core.serving.session_folder import SessionFolder


@dataclass
class Shown:
    key: str
    name: str
    u: float
    t: float
    ready: bool = True


def test_composition_sentences_name_every_applied_identity_by_key_and_setting():
    a, b, c = Shown("1", "Ada", 0.5, 0.8), Shown("2", "Ada", 1.0, 1.6), Shown("3", "Bo", 0.125, 0.4)
    assert text.listing([b, c]) == "2 · Ada at u = 1.00 (t = 1.60) and 3 · Bo at u = 0.12 (t = 0.40)"
    assert text.listing([a, b, c]).count(",") == 1
    assert text.composition_footer(a, []) == ""
    assert text.composition_footer(a, [b]) == ("Bottom row: 1 · Ada at u = 0.50 (t = 0.80), composed with "
                                               "2 · Ada at u = 1.00 (t = 1.60).")
    assert text.composition_text(a, [], compose=False, others_ready=0) == ""
    assert "the 1 other forgotten identity of this session is not applied" in text.composition_text(a, [], False, 1)
    assert "the 2 other forgotten identities of this session are not applied" in text.composition_text(a, [], False, 2)
    assert "every other forgotten identity is at t = 0" in text.composition_text(a, [], True, 2)
    assert "(not forgotten yet)" in text.at_t(Shown("4", "Cy", 0.0, 0.0, ready=False))


def test_the_slider_note_says_whether_the_adapter_has_a_calibrated_dial():
    adapter = ODEAdapter({"s": 4}, ODEConfig(hidden=4))
    assert text.dial_note(None) == "", "no adapter yet: nothing to say"
    assert "no calibrated dial" in text.dial_note(adapter) and "t = u × 1.6" in text.dial_note(adapter)
    adapter.set_dial(DialMap((0.0, 1.2, 1.6), "loss network", adapter.digest()))
    assert text.dial_note(adapter) == "calibrated for this adapter after training, measured by the loss network"


def test_a_session_folder_keeps_the_last_renders_of_a_kind_and_goes_away_whole(tmp_path):
    folder = SessionFolder(tmp_path / "sessions")
    assert folder.folder is None and folder.files() == []  # nothing on disk before the first file
    im = Image.new("RGB", (8, 8))
    for _ in range(SessionFolder.KEEP_FILES + 2):
        folder.publish(im, "grid", "jpeg")
    source = folder.fixed_image("source", "3", im)
    assert folder.fixed_image("source", "3", Image.new("RGB", (8, 8), "red")) == source  # written once
    assert len([p for p in folder.files() if p.name.startswith("grid.")]) == SessionFolder.KEEP_FILES
    assert folder.files_of("3") == [source] and folder.folder.parent == tmp_path / "sessions"
    path = folder.folder
    folder.remove()
    assert not path.exists() and folder.files() == []
    with pytest.raises(StudioError, match="session has ended"):
        folder.publish(im, "grid")
