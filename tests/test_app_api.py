"""The gradio app through its API (gradio_client): add a face, forget it, move the slider (its position u, or raw t in
the advanced view); bad files get clear errors; API misuse gets a clear message and no traceback in the log; uploads
and session files do not outlive their use."""

from __future__ import annotations

import json
import struct
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from legato_core import faceworld
from legato_core.images import to_pil

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

STEPS = 6
STATUS = 6  # index of the status text in the outputs of /add_image, /poll, /import_adapter (gr.State is left out)
T_SLIDER, U_SLIDER, RAW_T = 3, 9, 10  # the two sliders and the raw-t toggle in the same outputs
# grid layout (legato_core.studio.Studio): label column, header, 128 px cells, a 16 px gap between rows / groups
X0, Y0, CELL, GAP, N_TARGET = 112, 32, 128, 16, 3


@pytest.fixture(scope="module")
def url(app_server):
    return app_server


def _client(url) -> Client:
    return Client(url, verbose=False)  # one client = one browser session


def _rows(path) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom) rows of the grid image as int arrays, without each row's first and last two pixel lines:
    a JPEG decoder's chroma upsampling blends those with what lies above / below the row, which differs."""
    im = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    top = im[Y0 + 2:Y0 + CELL - 2, X0:]
    bottom = im[Y0 + CELL + GAP + 2:Y0 + 2 * CELL + GAP - 2, X0:]
    return top, bottom


def _poll_until(client, words, timeout=180, key="1") -> str:
    deadline, text = time.time() + timeout, ""
    while time.time() < deadline:
        text = client.predict(key, api_name="/poll")[STATUS]  # the status textbox
        if any(w in text for w in words):
            return text
        time.sleep(0.3)
    raise AssertionError(f"no status with {words} within {timeout} s; last: {text!r}")


def _face_file(tmp_path, face_id=200_003, mode="RGBA", size=256):
    path = tmp_path / f"face-{face_id}.png"
    to_pil(faceworld.render([face_id], 0)[0]).resize((size, size), Image.BICUBIC).convert(mode).save(path)
    return path


def test_upload_forget_and_render_at_several_t(url, tmp_path):
    c = _client(url)
    t0 = time.time()
    out = c.predict(handle_file(_face_file(tmp_path)), api_name="/add_image")
    first_render = time.time() - t0
    dropdown, grid0, status = out[0], out[4], out[STATUS]
    assert dropdown["value"] == "1" and "Added" in status
    top, bottom = _rows(grid0)
    assert np.abs(top - bottom).max() <= 2, "before training the bottom row is the original model"

    t0 = time.time()
    out = c.predict("1", STEPS, api_name="/forget")
    assert "already" not in out[0]
    done = _poll_until(c, ["Done", "Failed"])
    forget_seconds = time.time() - t0
    assert done.startswith("Done"), done

    renders = {}
    for t in (0.0, 0.4, 0.8, 0.0):  # raw t, within the dial (it may end before T, where arcface calls it unrelated)
        t1 = time.time()
        renders[t] = c.predict(t, "1", api_name="/render")[0]
        print(f"render t={t}: {1000 * (time.time() - t1):.0f} ms via the API")
    top, bottom = _rows(renders[0.0])
    assert np.abs(top - bottom).max() <= 2, "t = 0 must show exactly the original model"
    assert np.abs(np.asarray(Image.open(renders[0.0]), int) - np.asarray(Image.open(grid0), int)).max() <= 2
    w = N_TARGET * CELL
    at_u0, at_u1 = (c.predict(u, "1", api_name="/render_u")[0] for u in (0.0, 1.0))  # the slider's position
    top, bottom = _rows(at_u1)
    assert np.abs(top[:, :w] - bottom[:, :w]).mean() > 1, "at u = 1 the forgotten face must change"
    top, bottom = _rows(at_u0)
    assert np.abs(top - bottom).max() <= 2, "u = 0 is exactly the original model too"
    print(f"time to first render {first_render:.2f} s; forget {STEPS} steps as seen by the UI {forget_seconds:.1f} s")


def test_bad_files_get_clear_errors(url, tmp_path):
    c = _client(url)
    cases = {"notes.png": b"this is not an image", "empty.png": b""}
    good = tmp_path / "good.png"
    _face_file(tmp_path, 200_004, "RGB").rename(good)
    cases["cut.png"] = good.read_bytes()[: good.stat().st_size // 2]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(Exception, match="Cannot use this file") as info:
            c.predict(handle_file(tmp_path / name), api_name="/add_image")
        print(name, "->", info.value)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1800, 1800, 3), np.uint8)).save(big)
    with pytest.raises(Exception, match=r"(?i)size|large"):  # over max_file_size: refused before the upload
        c.predict(handle_file(big), api_name="/add_image")
    grey = tmp_path / "grey.png"
    _face_file(tmp_path, 200_005, "L").rename(grey)
    assert "Added" in c.predict(handle_file(grey), api_name="/add_image")[STATUS]


def test_second_job_is_refused_and_cancel_works(url):
    c = _client(url)
    c.predict(200_006, api_name="/add_identity")
    c.predict(200_007, api_name="/add_identity")
    c.predict("1", 400, api_name="/forget")
    out = c.predict("2", 400, api_name="/forget")
    assert "Only one job per session" in out[0]
    _poll_until(c, ["step", "Waiting"], timeout=60)
    assert c.predict(api_name="/cancel") == "Cancelling…"
    assert "Cancelled" in _poll_until(c, ["Cancelled"], timeout=60)


def test_server_wide_queue_shows_the_place_of_a_waiting_job(url):
    a, b = _client(url), _client(url)  # two sessions; the server runs one job at a time (--max-jobs 1)
    a.predict(200_009, api_name="/add_identity")
    b.predict(200_010, api_name="/add_identity")
    a.predict("1", 400, api_name="/forget")
    _poll_until(a, ["step"], timeout=60)
    b.predict("1", 400, api_name="/forget")
    assert "place 1 in the queue" in _poll_until(b, ["Waiting for the server"], timeout=30)
    waiting = _poll_until(b, ["should start in about"], timeout=60)  # the job ahead has progress: an estimate
    assert "place 1 in the queue" in waiting, waiting
    b.predict(api_name="/cancel")
    assert "Cancelled" in _poll_until(b, ["Cancelled"], timeout=30)
    a.predict(api_name="/cancel")
    assert "Cancelled" in _poll_until(a, ["Cancelled"], timeout=30)


def test_adapter_download_restore_and_wrong_base(url, tmp_path):
    c = _client(url)
    c.predict(200_008, api_name="/add_identity")
    c.predict("1", 3, api_name="/forget")
    assert _poll_until(c, ["Done", "Failed"]).startswith("Done")
    path = c.predict("1", api_name="/export_adapter")
    assert str(path).endswith(".safetensors")

    d = _client(url)
    out = d.predict(handle_file(path), api_name="/import_adapter")
    assert out[0]["value"] == "1" and "face-world #200008" in out[0]["choices"][0][0]
    assert "Restored" in _poll_until(d, ["Restored", "Failed"])

    from legato_core.adapters import ODEAdapter

    wrong = ODEAdapter.load(path)
    wrong.base_weight_hash = "0123456789abcdef"
    wrong.save(tmp_path / "wrong.safetensors")
    with pytest.raises(Exception, match="different base model"):
        d.predict(handle_file(tmp_path / "wrong.safetensors"), api_name="/import_adapter")


# -- issue 16: misuse, messages, privacy, composition, removal, the view after a job -----------------------------
def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def adapter_file(url, tmp_path_factory):
    """An adapter trained (3 steps) and downloaded through the API, for tests that need forgotten identities."""
    c = _client(url)
    c.predict(200_008, api_name="/add_identity")
    c.predict("1", 3, api_name="/forget")
    assert _poll_until(c, ["Done", "Failed"]).startswith("Done")
    path = tmp_path_factory.mktemp("adapter") / "a.safetensors"
    path.write_bytes(Path(c.predict("1", api_name="/export_adapter")).read_bytes())
    c.predict(api_name="/end_session")
    return path


def _restore(c, path, key):
    out = c.predict(handle_file(path), api_name="/import_adapter")
    assert out[0]["value"] == key
    assert "Restored" in _poll_until(c, ["Restored", "Failed"], key=key)
    return out


def test_api_misuse_gets_a_clear_error_and_no_traceback(url, capfd):
    c = _client(url)
    c.predict(200_011, api_name="/add_identity")
    capfd.readouterr()
    cases = [
        ("/render", (1e9, "1"), r"t must be a number from 0 to 1.6; got 1000000000.0"),
        ("/render", ("fast", "1"), r"t must be a number from 0 to 1.6"),
        ("/curve", (-1, "1"), r"t must be a number from 0 to 1.6"),
        ("/render_u", (1.6, "1"), r"u must be a number from 0 to 1; got 1.6"),
        ("/curve_u", ("half", "1"), r"u must be a number from 0 to 1; got 'half'"),
        ("/render_u", (None, "1"), r"u must be a number from 0 to 1; got None"),
        ("/raw_t", ("yes", "1"), r"The raw-t switch is true or false; got .yes."),
        ("/forget", ("1", 5000), r"Training steps must be a whole number from 1 to 600; got 5000"),
        ("/forget", ("1", 2.5), r"whole number from 1 to 600"),
        ("/select", ("zzz",), r"There is no identity 'zzz' in this session; choose one from the Identity list"),
        ("/render", (0.5, "zzz"), r"no identity 'zzz'"),
        ("/remove", ("zzz",), r"no identity 'zzz'"),
        ("/export_adapter", ("1",), r"has no adapter yet: forget it first"),
        ("/compose", ("yes", "1"), r"The compose switch is true or false; got .yes."),
        ("/add_identity", (3.7,), r"whole number such as 200010; 3.7 is not one \(ids are not rounded\)"),
        ("/add_identity", (1e15,), r"takes ids from 200,000 to 999,999,999"),
        ("/add_identity", (150,), r"ids below 200,000 are the ones the networks were trained and tuned on"),
        ("/add_identity", ("abc",), r"whole number"),
    ]
    for api, args, message in cases:
        with pytest.raises(Exception, match=message):
            c.predict(*args, api_name=api)
    out = c.predict(200_012.0, api_name="/add_identity")  # a whole number sent as a float is fine
    assert "face-world #200012" in out[STATUS]
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err, (log.out + log.err)[-3000:]


def test_over_the_pixel_limit_and_refused_uploads_are_not_kept(url, tmp_path, capfd):
    import gradio as gr

    c = _client(url)
    name = f"secret-{uuid.uuid4().hex[:8]}"
    huge = tmp_path / f"{name}-huge.png"
    huge.write_bytes(_png_header(9000, 9000))
    with pytest.raises(Exception) as info:
        c.predict(handle_file(huge), api_name="/add_image")
    assert "Cannot use this file: the image has 81 megapixels and the limit is 40 megapixels." in str(info.value)
    good = _face_file(tmp_path, 200_013)
    kept = good.rename(tmp_path / f"{name}-face.png")
    assert "Added" in c.predict(handle_file(kept), api_name="/add_image")[STATUS]
    cache = Path(gr.utils.get_upload_folder())
    left = [p for p in cache.rglob(f"{name}*") if p.is_file()]
    assert not left, f"uploads kept on the server after they were read: {left}"
    log = capfd.readouterr()
    assert name not in log.out + log.err, "file names must not be logged"


def test_session_files_are_deleted_when_the_session_ends(url, adapter_file):
    import app

    c = _client(url)
    _restore(c, adapter_file, "1")
    c.predict(0.8, "1", api_name="/render")
    exported = Path(c.predict("1", api_name="/export_adapter"))
    studio = app.SESSIONS[c.session_hash]
    folder = studio.folder
    assert folder is not None and folder.is_relative_to(app.session_root())
    files = studio.files()
    assert len(files) >= 4 and {p.suffix for p in files} >= {".png", ".jpeg", ".safetensors"}
    assert exported.name in {p.name for p in files}, "the adapter is served from the session folder, not copied"
    c.close()  # as a closed tab: the heartbeat stops, gradio runs the unload event
    deadline = time.time() + 40
    while folder.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert not folder.exists(), "the session's folder must go when the session ends"
    assert c.session_hash not in app.SESSIONS and studio.closed and not studio.entries

    d = _client(url)  # the "End session" button does the same at once
    d.predict(200_014, api_name="/add_identity")
    folder = app.SESSIONS[d.session_hash].folder
    assert folder.exists()
    out = d.predict(api_name="/end_session")
    assert "everything it held was deleted" in out[STATUS] and not folder.exists()


def test_idle_sessions_end_and_say_so(url):
    import app

    c = _client(url)
    c.predict(200_015, api_name="/add_identity")
    studio = app.SESSIONS[c.session_hash]
    folder = studio.folder
    assert c.session_hash not in app.reap_sessions(), "an active session is kept"
    assert c.session_hash in app.reap_sessions(idle_seconds=0)
    assert not folder.exists() and studio.closed_reason == "idle"
    with pytest.raises(Exception, match="This session ended after 15 minutes without activity"):
        c.predict("1", api_name="/select")
    assert "Added" in c.predict(200_015, api_name="/add_identity")[STATUS], "adding a face starts afresh"


def test_the_sweep_deletes_folders_nobody_owns(url):
    import os

    import app

    root = app.session_root()
    orphan = root / "legato-session-orphan"  # e.g. a session whose close never ran
    orphan.mkdir(parents=True, exist_ok=True)
    (orphan / "grid.1.jpeg").write_bytes(b"x")
    old = time.time() - 120
    os.utime(orphan, (old, old))
    dead = root.parent.parent / "legato-server-999999999"  # the cache of a server that no longer runs
    (dead / "sessions" / "legato-session-x").mkdir(parents=True, exist_ok=True)
    partial = root.parent / "tmpcutoffupload"  # what a cut-off upload leaves
    partial.write_bytes(b"half a photo")
    os.utime(partial, (old - 600, old - 600))
    c = _client(url)
    c.predict(200_018, api_name="/add_identity")
    live = app.SESSIONS[c.session_hash].folder
    app.reap_sessions()
    assert not orphan.exists() and not dead.exists() and not partial.exists()
    assert live.exists(), "a live session's folder stays"
    app.release_memory()  # runs (glibc: malloc_trim) without error


def test_composition_is_off_by_default_and_can_be_switched_on(url, adapter_file):
    c = _client(url)
    _restore(c, adapter_file, "1")
    _restore(c, adapter_file, "2")
    c.predict(1.0, "2", api_name="/curve_u")  # identity 2 fully forgotten
    grid, text = c.predict(0.0, "1", api_name="/render")
    top, bottom = _rows(grid)
    assert np.abs(top - bottom).max() <= 2, "t = 0 is the original while composition is off"
    assert "composition is off" in text
    grid, text = c.predict(True, "1", api_name="/compose")
    top, bottom = _rows(grid)
    assert np.abs(top - bottom).mean() > 0.2, "composed: identity 2's adapter acts at its own t"
    assert text.startswith("Composition is on: the bottom row applies 1 · face-world #200008 at u = 0.00 (t = 0.00) "
                           "together with 2 · face-world #200008 at u = 1.00 (t = 1.60)."), text
    assert Image.open(grid).height > Y0 + 2 * CELL + GAP + 40, "and the grid has the same line under its rows"
    grid, text = c.predict(False, "1", api_name="/compose")
    top, bottom = _rows(grid)
    assert np.abs(top - bottom).max() <= 2


def test_remove_frees_room_and_the_limit_says_how(url, adapter_file):
    import app
    from legato_core.studio import MAX_IDENTITIES

    assert MAX_IDENTITIES >= 20  # a session forgets many people; this one is held to 6 to reach its limit quickly
    app.STUDIO_OPTIONS["max_identities"] = 6
    try:
        c = _client(url)
        for face in range(200_020, 200_026):
            c.predict(face, api_name="/add_identity")
    finally:
        app.STUDIO_OPTIONS.pop("max_identities")
    with pytest.raises(Exception, match=r"already holds 6 identities.*remove one .*to make room"):
        c.predict(200_026, api_name="/add_identity")
    out = c.predict("3", api_name="/remove")
    assert "Removed face-world #200022" in out[STATUS]
    assert [k for _, k in out[0]["choices"]] == ["1", "2", "4", "5", "6"]
    out = c.predict(handle_file(adapter_file), api_name="/import_adapter")  # room again
    assert out[0]["value"] == "7"
    assert "Restored" in _poll_until(c, ["Restored", "Failed"], key="7")
    out = c.predict("7", api_name="/remove")
    assert out[0]["value"] == "6" and "its adapter and its files are deleted" in out[STATUS]


def test_the_view_stays_on_the_identity_being_looked_at(url):
    c = _client(url)
    c.predict(200_016, api_name="/add_identity")
    c.predict(200_017, api_name="/add_identity")
    c.predict("1", 3, api_name="/forget")
    c.predict("2", api_name="/select")  # the person looks at identity 2 while 1 trains
    deadline, out = time.time() + 180, None
    while time.time() < deadline:
        out = c.predict("2", api_name="/poll")
        if "Done" in str(out[STATUS]):
            break
        time.sleep(0.3)
    assert out is not None and "Done" in out[STATUS]
    assert out[0]["value"] == "2", "the finished job must not pull the view back to identity 1"
    assert "(forgotten)" in out[0]["choices"][0][0] and "Select 1 · face-world #200016" in out[STATUS]


def test_a_job_ending_between_two_reads_still_says_done(url):
    """The poll reads the job's status and takes the one-time "finished" signal; if the job ends between the two
    reads, the stale "training" status must not replace the "Done" line (a fresh-clone CI run lost it so)."""
    import dataclasses

    import app

    c = _client(url)
    c.predict(200_018, api_name="/add_identity")
    c.predict(200_019, api_name="/add_identity")
    c.predict("1", 2, api_name="/forget")
    studio = app.SESSIONS[c.session_hash]
    studio.wait(120)
    finished = studio.status()
    assert finished.state == "done"
    stale = dataclasses.replace(finished, state="training", step=1)
    studio.status = lambda: stale  # every read of the session's status is the one taken just before the job ended
    try:
        out = c.predict("2", api_name="/poll")
    finally:
        del studio.status
    assert "Done" in out[STATUS] and out[0]["value"] == "2"


def _markers(plot) -> list[float]:
    """The x of the curve's markers (where the slider is) in a gr.Plot value as the API returns it."""
    fig = json.loads(plot["plot"]) if isinstance(plot, dict) else json.loads(plot)
    return [tr["x"][0] for tr in fig["data"] if tr.get("mode") == "markers"]


def test_the_slider_is_the_position_u_and_raw_t_is_the_advanced_view(url, adapter_file):
    import app

    c = _client(url)
    _restore(c, adapter_file, "1")
    entry = app.SESSIONS[c.session_hash].get("1")
    adapter = entry.adapter
    assert adapter.dial is not None, "an adapter from a forget job carries its calibrated dial"
    view = c.predict("1", api_name="/select")
    assert view[U_SLIDER]["value"] == 1 and view[U_SLIDER]["visible"] is True and view[RAW_T] is False
    assert view[T_SLIDER]["visible"] is False and "calibrated" in view[U_SLIDER]["info"]

    grid_u, _ = c.predict(0.5, "1", api_name="/render_u")
    assert entry.u == 0.5 and entry.t == adapter.t_at(0.5), "the slider's position goes through the adapter's dial"
    grid_t, _ = c.predict(adapter.t_at(0.5), "1", api_name="/render")  # the same setting, as raw t
    assert np.abs(_rows(grid_u)[1] - _rows(grid_t)[1]).max() <= 2 and entry.t == pytest.approx(adapter.t_at(0.5))
    assert _markers(c.predict(0.25, "1", api_name="/curve_u")) == [0.25, 0.25], "the curve's x-axis is u"
    assert _markers(c.predict(adapter.t_at(0.5), "1", api_name="/curve")) == [pytest.approx(entry.u)] * 2

    c.predict(0.5, "1", api_name="/render_u")
    out = c.predict(True, "1", api_name="/raw_t")  # the advanced view: the same setting, shown as t
    u_slider, t_slider, raw = out
    assert raw is True and u_slider["visible"] is False and t_slider["visible"] is True
    assert t_slider["value"] == round(adapter.t_at(0.5), 4) and entry.u == 0.5, "switching keeps the render"
    out = c.predict("1", api_name="/select")
    assert out[RAW_T] is True and out[T_SLIDER]["visible"] is True and out[U_SLIDER]["visible"] is False
    u_slider, t_slider, raw = c.predict(False, "1", api_name="/raw_t")
    assert u_slider["value"] == 0.5 and u_slider["visible"] is True and t_slider["visible"] is False


# -- issue 30: every panel shows the selected identity; refused uploads and API misuse; the API's formats; 404s ---
LOSS_PLOT, PREVIEW, FACE_FOUND, FACE_CROP = 11, 12, 13, 14  # after the toggle (gr.State and the face row left out)


def test_every_panel_follows_the_selected_identity(url, tmp_path):
    c = _client(url)
    c.predict(200_040, api_name="/add_identity")
    c.predict("1", 3, api_name="/forget")
    assert _poll_until(c, ["Done", "Failed"]).startswith("Done")
    two = c.predict(handle_file(_face_file(tmp_path, 200_041)), api_name="/add_image")  # an upload: a face found
    assert two[0]["value"] == "2" and two[LOSS_PLOT] is None and two[PREVIEW] is None
    assert two[FACE_FOUND] is not None and two[FACE_CROP] is not None
    one = c.predict("1", api_name="/select")
    assert one[LOSS_PLOT] is not None and one[PREVIEW] is not None, "identity 1's own run: its losses and preview"
    assert one[FACE_FOUND] is None and one[FACE_CROP] is None, "added by id: no face was detected"
    assert one[STATUS].startswith("Done: face-world #200040 forgotten"), one[STATUS]
    two = c.predict("2", api_name="/select")
    assert two[LOSS_PLOT] is None and two[PREVIEW] is None and two[FACE_FOUND] is not None
    assert two[STATUS] == "2 · face-200041.png: not forgotten yet; press Forget to train its adapter.", two[STATUS]


def test_refused_uploads_and_bad_api_arguments_give_one_message_and_no_traceback(url, tmp_path, capfd):
    import app

    app.STUDIO_OPTIONS["max_identities"] = 6  # this session's limit, reached quickly (the app's is MAX_IDENTITIES)
    try:
        c = _client(url)
        c.predict(200_030, api_name="/add_identity")  # the session starts here, with its limit
    finally:
        app.STUDIO_OPTIONS.pop("max_identities")
    capfd.readouterr()
    tiny = tmp_path / "one-pixel.png"
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(Exception, match=r"Upload refused\. Cannot use this file: .*too small \(1x1\)"):
        c.predict(handle_file(tiny), api_name="/add_image")
    for bad in ("not-a-path", 42):
        with pytest.raises(Exception, match=r"Upload refused\. A face image is sent as a file, with "
                                            r"gradio_client\.handle_file\(path\); got "):
            c.predict(bad, api_name="/add_image")
    with pytest.raises(Exception, match=r"Upload refused\. An adapter is sent as a file"):
        c.predict("adapter.safetensors", api_name="/import_adapter")
    for face in range(200_031, 200_036):
        c.predict(face, api_name="/add_identity")
    with pytest.raises(Exception, match=r"Upload refused\. This session already holds 6 identities"):
        c.predict(handle_file(_face_file(tmp_path, 200_036)), api_name="/add_image")
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err, (log.out + log.err)[-3000:]


def test_the_api_says_what_an_identity_key_is_and_what_each_endpoint_does(url):
    info = _client(url).view_api(return_format="dict", print_info=False)
    assert "Literal[]" not in json.dumps(info), "the identity key is a string, not an empty list of choices"
    key = info["named_endpoints"]["/select"]["parameters"][0]
    assert key["python_type"]["type"] == "str" and "a string such as '1'" in key["python_type"]["description"]
    steps = info["named_endpoints"]["/forget"]["parameters"][1]
    assert "between 1 and 600" in json.dumps(steps), "a slider says its range"
    for name in ("/add_image", "/add_identity", "/select", "/forget", "/poll", "/remove", "/render_u",
                 "/export_adapter", "/import_adapter", "/end_session"):
        assert info["named_endpoints"][name].get("description"), f"{name} has no description"


def _status_of(url: str, path: Path) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/gradio_api/file={path}") as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_after_end_session_its_files_answer_404(url, tmp_path):
    import app

    c = _client(url)
    c.predict(handle_file(_face_file(tmp_path, 200_043)), api_name="/add_image")
    files = app.SESSIONS[c.session_hash].files()
    assert {p.name.split("-1.")[0] for p in files} >= {"face-found", "source", "inversion"}, files
    assert all(_status_of(url, p) == 200 for p in files)
    c.predict(api_name="/end_session")
    assert [_status_of(url, p) for p in files] == [404] * len(files)


def test_an_idle_timeout_is_announced_when_it_happens(url):
    import app

    c = _client(url)
    c.predict(200_044, api_name="/add_identity")
    assert not isinstance(c.predict(api_name="/watch_session")[STATUS], str), "a live session: nothing to say"
    app.reap_sessions(idle_seconds=0)
    out = c.predict(api_name="/watch_session")
    assert out[STATUS].startswith("This session ended after 15 minutes without activity") and out[0]["value"] is None
    assert not isinstance(c.predict(api_name="/watch_session")[STATUS], str), "said once"


def _call_raw(url: str, api: str, data: list) -> str:
    """An API call as a raw HTTP client makes it (no gradio_client: nothing is uploaded for it); the event's text."""
    import urllib.request

    base = f"{url.rstrip('/')}/gradio_api/call/{api}"
    req = urllib.request.Request(base, data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        event = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{base}/{event}") as r:
        return r.read().decode()


def test_a_session_file_is_never_read_or_deleted_as_someone_elses_upload(url, capfd):
    import app

    a = _client(url)
    a.predict(200_045, api_name="/add_identity")
    victim = next(p for p in app.SESSIONS[a.session_hash].files() if p.name.startswith("source"))
    capfd.readouterr()
    for payload in ({"path": str(victim), "meta": {"_type": "gradio.FileData"}}, {"path": str(victim)}):
        answer = _call_raw(url, "add_image", [payload])
        assert "event: error" in answer and "Upload refused" in answer, answer
    assert victim.exists(), "another session's face stays where it is"
    log = capfd.readouterr()
    assert "Traceback" not in log.out + log.err, (log.out + log.err)[-3000:]
