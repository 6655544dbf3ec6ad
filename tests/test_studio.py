"""The demo's session layer: identities, background jobs, the queue, live renders, the slider (its position u
through each adapter's dial, and the raw-t view), curves, adapters in and out, and isolation between sessions that
share one generator."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from legato_core import faceworld
from legato_core.adapters import ODEAdapter, active, active_adapters
from legato_core.adapters.dial import DialMap
from legato_core.images import ImageError, to_pil
from legato_core.studio import BusyError, JobQueue, Resources, Studio, StudioError
from legato_core.unlearning.engine import ForgetConfig
from legato_core.unlearning.targets import TargetConfig

STEPS = 6


@pytest.fixture(scope="module")
def res():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the app's recommended setting on a small shared CPU box
    try:
        from legato_core.backends.embedded import EmbeddedFaceBackend

        backend = EmbeddedFaceBackend.from_pretrained(refine_steps=3)  # inversion quality is not under test here
    except FileNotFoundError as e:
        pytest.skip(f"trained weights are missing: {e}")
    yield Resources(backend, curve_retained=4)
    torch.set_num_threads(threads)


def _studio(res, queue=None, **kw):
    kw.setdefault("slider_step", 0.4)  # fewer background prefills: the test box has 2 busy cores
    # the session's bookkeeping is under test, not the choice of substitute: the nearest is taken unchecked
    kw.setdefault("default_config", ForgetConfig(target=TargetConfig(path_candidates=0)))
    return Studio(res, queue or JobQueue(1), curve_views=2, **kw)


def _wait(studio, timeout=120):
    st = studio.wait(timeout)
    assert st is not None and st.done, st and st.text()
    return st


@pytest.fixture(scope="module")
def trained(res):
    """One session with one forgotten face-world identity (a short run)."""
    studio = _studio(res)
    entry = studio.add_identity(200_001)
    before_grid = studio.render_grid(entry.key, 0.0)
    studio.start_forget(entry.key, steps=STEPS)
    with pytest.raises(BusyError, match="already running"):
        studio.start_forget(entry.key, steps=STEPS)  # the second job in one session is refused
    st = _wait(studio)
    assert st.state == "done", st.text()
    yield studio, entry, before_grid
    studio.close()


# -- adding faces -------------------------------------------------------------------------------------------------
def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (with almost no pixel data): the decoder must never run."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _face_png(face_id=200_002, size=128, mode="RGB") -> Image.Image:
    return to_pil(faceworld.render([face_id], 0)[0]).resize((size, size)).convert(mode)


@pytest.mark.parametrize("kind", ["text", "empty", "truncated", "huge", "bomb"])
def test_bad_files_are_refused_with_a_clear_message(res, tmp_path, kind):
    studio = _studio(res)
    path = tmp_path / "face.png"
    if kind == "text":
        path.write_text("not a picture")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buf, "PNG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "huge":
        path.write_bytes(_png_header(9000, 9000))  # 81 MP > the 40 MP limit
    else:
        path.write_bytes(_png_header(20_000, 20_000))  # beyond PIL's own decompression-bomb limit
    expected = {"text": "not an image", "empty": "empty", "truncated": "truncated", "huge": "81 megapixels",
                "bomb": "400 megapixels"}[kind]
    with pytest.raises(ImageError, match=expected):
        studio.add_image(path)
    assert not studio.entries


def test_odd_but_valid_images_are_accepted(res, tmp_path):
    studio = _studio(res)
    rgba = _face_png(mode="RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255))
    rgba.save(tmp_path / "rgba.png")
    _face_png(mode="L").save(tmp_path / "grey.png")
    _face_png(mode="CMYK").save(tmp_path / "cmyk.jpg")
    img = _face_png().rotate(90, expand=True)  # stored sideways, EXIF says: rotate 90 CW on display
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "exif.jpg", exif=exif.tobytes())
    names = ["rgba.png", "grey.png", "cmyk.jpg", "exif.jpg"]
    for name in names:
        entry = studio.add_image(tmp_path / name)
        assert entry.source.mode == "RGB" and entry.source.size == (64, 64)
        assert entry.latent.shape == (1, res.base.latent_dim)
    upright = np.asarray(studio.get("4").source, dtype=float)
    straight = np.asarray(to_pil(faceworld.render([200_002], 0)[0]), dtype=float)
    assert np.abs(upright - straight).mean() < 12, "EXIF orientation must be applied"
    assert [e.name for e in studio.entries.values()] == names


def test_identity_limit_and_bad_ids(res):
    studio = _studio(res, max_identities=1)
    with pytest.raises(StudioError, match="below 200,000 are the ones the networks were trained and tuned on"):
        studio.add_identity(-3)
    with pytest.raises(StudioError, match="whole number"):
        studio.add_identity("abc")
    with pytest.raises(StudioError, match="add a face first"):
        studio.start_forget()
    studio.add_identity(200_003)
    with pytest.raises(StudioError, match=r"already holds 1 identities, the most it can hold; remove one .* make room"):
        studio.add_identity(200_004)
    studio.remove("1")  # removing one makes room
    assert studio.add_identity(200_004).name == "face-world #200004"


@pytest.mark.parametrize(("value", "expected"), [
    (200_000, 200_000), (200_010.0, 200_010), ("200010", 200_010), (" 1,000,000 ", 1_000_000), (999_999_999, None),
    (np.int64(300_000), 300_000),
])
def test_face_ids_taken(value, expected):
    assert Studio.face_id(value) == (expected or value)


@pytest.mark.parametrize(("value", "why"), [
    (3.7, "whole number.*not rounded"), (200_010.5, "not rounded"), (199_999, "trained and tuned"),
    (4, "trained and tuned"), (-3, "trained and tuned"), (10**15, "from 200,000 to 999,999,999"),
    (1e15, "from 200,000 to 999,999,999"), (float("nan"), "whole number"), (float("inf"), "whole number"),
    (True, "whole number"), (None, "whole number"), ("abc", "whole number"), ([200_010], "whole number"),
])
def test_face_ids_refused_with_the_reason(value, why):
    with pytest.raises(StudioError, match=why):
        Studio.face_id(value)


# -- forgetting and the intensity knob ----------------------------------------------------------------------------
def test_job_reports_progress_and_history(trained):
    studio, entry, _ = trained
    st = studio.status()
    assert st.state == "done" and st.step == st.steps == STEPS
    assert len(st.losses) == STEPS and {"total", "identity", "preservation"} <= set(st.losses[0])
    assert st.preview is not None and st.preview.shape == (3, 64, 64)
    assert "Done" in st.text() and entry.ready
    assert entry.u == 1.0 and entry.t == pytest.approx(entry.t_max), "a new adapter is shown fully forgotten"
    assert entry.adapter.dial is not None, "the engine calibrates every adapter it trains on the embedded backend"


def test_t0_is_exactly_the_original_and_t_changes_the_target(trained):
    studio, entry, before_grid = trained
    before, at0 = studio.render_rows(entry.key, 0.0)
    assert torch.equal(before, at0)
    assert np.array_equal(np.asarray(studio.render_grid(entry.key, 0.0)), np.asarray(before_grid))
    _, at_t = studio.render_rows(entry.key, entry.t_max)
    n = len(entry.grid_views)
    assert (at_t[:n] - before[:n]).abs().max() > 0, "the adapter must change the forgotten face at t = T"
    # the t = 0 rows are the base model's renders
    with torch.inference_mode():
        base = studio.res.base.render(entry.latent.expand(n, -1), entry.grid_views)
    assert (before[:n] - base).abs().max() <= 0.5 / 255 + 1e-6


def test_forgetting_curve_has_nine_slider_positions_and_starts_at_identity(trained):
    studio, entry, _ = trained
    c = studio.curve(entry.key)
    assert len(c["u"]) == len(c["t"]) == len(c["id_target"]) == len(c["retention"]) == 9
    assert c["u"] == pytest.approx(list(np.linspace(0, 1, 9))), "evenly spaced positions of the slider"
    assert c["t"] == pytest.approx([entry.adapter.t_at(u) for u in c["u"]], abs=1e-6), "each at its dial's t"
    assert c["t"][0] == 0 and c["t"][-1] == pytest.approx(entry.t_max)
    assert c["id_target"][0] == pytest.approx(1.0, abs=1e-4) and c["retention"][0] == pytest.approx(1.0, abs=1e-4)
    assert 0 < c["threshold"] < 1 and c["current_u"] == entry.u and c["current_t"] == entry.t
    assert c["dial"] == entry.adapter.dial.measured_by
    assert studio.curve(entry.key) is not None  # cached: no recomputation


def test_slider_renders_are_prefilled_and_fast(trained):
    studio, entry, _ = trained
    studio.prefill(entry.key)
    deadline = time.time() + 60
    while not studio.prefill_done and time.time() < deadline:
        time.sleep(0.1)
    assert studio.prefill_done
    times = []
    for t in studio.slider_values(entry):
        t0 = time.perf_counter()
        before, after, hit = studio._rows_u8(entry, t)
        studio.compose_grid(before, after, entry)
        times.append(time.perf_counter() - t0)
        assert hit, f"t = {t} was not prefilled"
    assert np.median(times) < 0.1


def test_export_import_roundtrip_and_wrong_base_is_refused(res, trained, tmp_path):
    studio, entry, _ = trained
    path = studio.export_adapter(entry.key, tmp_path / "a.safetensors")
    other = _studio(res)
    restored = other.import_adapter(path)
    assert restored.name == entry.name and torch.allclose(restored.latent, entry.latent, atol=1e-5)
    assert _wait(other).state == "done" and restored.ready
    assert restored.adapter.dial == entry.adapter.dial, "the dial map travels in the adapter file"
    assert other.curve(restored.key)["id_target"] == pytest.approx(studio.curve(entry.key)["id_target"], abs=1e-4)
    _, a = studio.render_rows(entry.key, 1.0)
    _, b = other.render_rows(restored.key, 1.0)
    n = len(entry.grid_views)
    assert (a[n:] - b[n:]).abs().max() <= 1 / 255 + 1e-6  # same adapter, same retained faces
    # an adapter for another base model
    wrong = ODEAdapter.load(path)
    wrong.base_weight_hash = "0123456789abcdef"
    wrong.save(tmp_path / "wrong.safetensors")
    with pytest.raises(StudioError, match="different base model"):
        other.import_adapter(tmp_path / "wrong.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(StudioError, match="not a legato adapter"):
        other.import_adapter(tmp_path / "junk.safetensors")
    assert len(other.entries) == 1
    other.close()


def test_several_identities_each_with_its_own_t(res, trained, tmp_path):
    studio, entry, _ = trained
    path = studio.export_adapter(entry.key, tmp_path / "a.safetensors")
    s = _studio(res)
    e1, e2 = s.import_adapter(path), None
    _wait(s)
    e2 = s.import_adapter(path)
    _wait(s)
    s.set_t(e1.key, 1.2)
    s.set_t(e2.key, 0.0)
    _, only_e1 = s.render_rows(e1.key)
    assert s.get(e2.key).t == 0.0 and s.get(e1.key).t == pytest.approx(1.2)
    s.set_t(e2.key, 0.8)
    _, alone = s.render_rows(e1.key)
    assert torch.equal(alone, only_e1), "composition is off by default: the other adapter does not act"
    s.set_compose(True)
    _, both = s.render_rows(e1.key)
    assert (both - only_e1).abs().max() > 0, "composed: every forgotten identity's adapter acts, each at its own t"
    s.close()


def test_t0_is_the_original_unless_composition_is_on(res, trained, tmp_path):
    """Issue 16: with two forgotten identities, the bottom row at t = 0 kept the other adapter on."""
    studio, entry, _ = trained
    path = studio.export_adapter(entry.key, tmp_path / "a.safetensors")
    s = _studio(res)
    e1 = s.import_adapter(path)
    _wait(s)
    e2 = s.import_adapter(path)
    _wait(s)
    e2.name = "second"
    s.set_u(e2.key, 1.0)
    before, at0 = s.render_rows(e1.key, 0.0)
    assert torch.equal(before, at0), "t = 0 is exactly the original while composition is off"
    text = s.composition_text(e1)
    assert "composition is off" in text and "1 other forgotten identity" in text
    plain = s.compose_grid(before, at0, e1)  # no footer
    assert s.render_grid(e1.key, 0.0).height == plain.height and s.composition_footer(e1) == ""

    s.set_compose(True)
    before, composed = s.render_rows(e1.key, 0.0)
    assert (composed - before).abs().max() > 0, "composed: the other adapter acts at its own t"
    assert s.composition_footer(e1) == (f"Bottom row: 1 · {e1.name} at u = 0.00 (t = 0.00), composed with 2 · second "
                                        "at u = 1.00 (t = 1.60).")
    assert s.composition_text(e1).startswith(f"Composition is on: the bottom row applies 1 · {e1.name} at u = 0.00 "
                                             "(t = 0.00) together with 2 · second at u = 1.00 (t = 1.60).")
    grid = s.render_grid(e1.key, 0.0)
    assert grid.height > plain.height and grid.width == plain.width, "the grid says so in a line under the rows"
    footer = np.asarray(grid.convert("L"))[plain.height:]
    assert footer.min() < 60, "the line is written in black, not in small grey"

    s.set_t(e2.key, 0.0)  # composed, but the other one at t = 0: nothing else acts
    before, at0 = s.render_rows(e1.key, 0.0)
    assert torch.equal(before, at0) and "every other forgotten identity is at t = 0" in s.composition_text(e1)
    s.set_compose(False)
    s.close()


def test_remove_drops_the_identity_its_adapter_and_files(res, trained, tmp_path):
    studio, entry, _ = trained
    path = studio.export_adapter(entry.key, tmp_path / "a.safetensors")
    s = _studio(res, session_root=tmp_path / "sessions")
    kept = s.add_identity(200_002)
    gone = s.import_adapter(path)
    _wait(s)
    exported = s.export_adapter(gone.key)
    shown = s.entry_image(gone, "source", gone.source)
    grid = s.publish(s.render_grid(gone.key, 1.0), "grid", "jpeg")
    assert exported.exists() and shown.exists() and grid.exists()
    assert exported.parent == s.folder and s.folder.parent == tmp_path / "sessions"
    removed = s.remove(gone.key)
    assert removed is gone and gone.key not in s.entries and gone.adapter is None
    assert not exported.exists() and not shown.exists()
    assert list(s.entries) == [kept.key]
    before, after = s.render_rows(kept.key)
    assert torch.equal(before, after), "no adapter of the removed identity acts any more"
    with pytest.raises(StudioError, match="no identity"):
        s.remove(gone.key)
    # a running job for the identity is cancelled by the removal
    s.start_forget(kept.key, steps=500)
    s.remove(kept.key)
    assert not s.busy and not s.entries
    s.close()


def test_close_deletes_the_session_folder_and_drops_what_it_held(res, trained, tmp_path):
    studio, entry, _ = trained
    path = studio.export_adapter(entry.key, tmp_path / "a.safetensors")
    s = _studio(res, session_root=tmp_path / "sessions")
    e = s.import_adapter(path)
    _wait(s)
    files = [s.export_adapter(e.key), s.entry_image(e, "source", e.source),
             s.publish(s.render_grid(e.key, 0.8), "grid", "jpeg")]
    for _ in range(Studio.KEEP_FILES + 3):  # only the last few renders of a kind are kept
        s.publish(s.render_grid(e.key, 0.8), "grid", "jpeg")
    assert len([p for p in s.files() if p.name.startswith("grid.")]) == Studio.KEEP_FILES
    folder = s.folder
    assert all(p.exists() for p in files[:2]) and folder.exists()
    s.close("closed")
    assert not folder.exists() and s.files() == [] and s.closed_reason == "closed"
    assert not s.entries and s.task is None and not s.ui and not s._cache
    with pytest.raises(StudioError, match="session has ended"):
        s.export_adapter(e.key)


def test_idle_clock_counts_a_running_job_as_activity(res):
    s = _studio(res)
    s.last_active -= 100
    assert s.idle_seconds >= 100
    s.touch()
    assert s.idle_seconds < 1
    s.add_identity(200_006)
    s.start_forget(steps=500)
    s.last_active -= 100
    assert s.idle_seconds == 0, "a job running (or queued) keeps the session alive"
    s.close()


def test_animated_upload_is_added_with_a_note(res, tmp_path):
    frames = [_face_png(size=64), _face_png(200_003, size=64)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    s = _studio(res)
    e = s.add_image(tmp_path / "anim.gif")
    assert e.notes == ["it is an animated image with 2 frames; only its first frame is used"]
    still = s.add_image(_save_png(tmp_path, frames[1]))
    assert still.notes == []
    s.close()


def _save_png(tmp_path, im):
    path = tmp_path / "still.png"
    im.save(path)
    return path


# -- the slider: position u through the adapter's dial, the raw-t view, adapters without a dial ------------------------
DIAL = (0.0, 0.1, 0.2, 0.4, 1.6)  # a hand-made dial: the first three quarters of the slider cover t <= 0.4


def _adapter_file(trained, tmp_path, knots: tuple[float, ...] | None):
    """The trained adapter saved with the dial map ``knots`` (None: no map, as in a file from before dial maps)."""
    studio, entry, _ = trained
    adapter = ODEAdapter.load(studio.export_adapter(entry.key, tmp_path / "a.safetensors"))
    adapter.set_dial(DialMap(knots, "test", adapter.digest()) if knots is not None else None)
    return adapter.save(tmp_path / "dial.safetensors")


def _restored(res, path):
    s = _studio(res)
    e = s.import_adapter(path)
    assert _wait(s).state == "done"
    return s, e


def test_the_slider_position_renders_at_the_t_the_adapters_dial_maps_it_to(res, trained, tmp_path):
    s, e = _restored(res, _adapter_file(trained, tmp_path, DIAL))
    adapter = e.adapter
    assert adapter.dial.measured_by == "test", "the file's dial map is restored with the adapter"
    assert e.u == 1.0 and e.t == pytest.approx(1.6)
    assert s.set_u(e.key, 0.5) == 0.5
    assert e.t == adapter.t_at(0.5) == pytest.approx(0.2), "u = 0.5 is t = 0.2 on this dial, not the raw 0.8"
    _, after = s.render_rows(e.key, u=0.5)
    n = len(e.grid_views)
    with torch.inference_mode(), active(res.base, [(adapter, adapter.t_at(0.5))]):
        direct = res.base.render(e.latent.expand(n, -1), e.grid_views)
    assert (after[:n] - direct).abs().max() <= 0.5 / 255 + 1e-6
    _, raw = s.render_rows(e.key, 0.8)  # the raw knob's t for u = 0.5
    assert (raw[:n] - after[:n]).abs().max() > 0, "the dial, not the raw knob, decides what u = 0.5 shows"
    _, _, u, t = s.view(e.key, u=0.75)
    assert (u, t) == (0.75, pytest.approx(0.4)) and e.u == 0.75, "a render stores its position"
    c = s.curve(e.key)
    assert c["dial"] == "test" and c["t"] == pytest.approx([adapter.t_at(x) for x in c["u"]])
    assert c["t"][4] == pytest.approx(0.2) and (c["current_u"], c["current_t"]) == (0.75, pytest.approx(0.4))
    assert s.set_u(e.key, 7) == 1.0 and s.set_u(e.key, -1) == 0.0, "positions are clamped to [0, 1]"
    with pytest.raises(StudioError, match="u must be a number"):
        s.set_u(e.key, float("nan"))
    with pytest.raises(StudioError, match="not both"):
        s.render_rows(e.key, 0.4, u=0.5)
    s.close()


def test_the_raw_t_view_keeps_each_identitys_setting_and_render(res, trained, tmp_path):
    s, e = _restored(res, _adapter_file(trained, tmp_path, (0.0, 0.4, 0.4, 1.2, 1.6)))  # flat from u = 1/4 to 1/2
    other = s.import_adapter(_adapter_file(trained, tmp_path / "b", DIAL))
    _wait(s)
    s.set_u(e.key, 0.375)
    s.set_u(other.key, 0.5)
    grid = np.asarray(s.render_grid(e.key))
    s.set_raw_t(True)
    assert (e.u, other.u) == (0.375, 0.5), "switching the view changes no setting"
    assert np.array_equal(np.asarray(s.render_grid(e.key)), grid), "and so not the render"
    assert e.t == pytest.approx(0.4) and other.t == pytest.approx(0.2), "the raw view shows each setting as its t"
    assert s.set_t(e.key, 0.4) == pytest.approx(0.4) and e.u == 0.25, "a raw t is kept as the first u reaching it"
    assert s.set_t(e.key, 1.4) == pytest.approx(1.4) and e.u == pytest.approx(0.875)
    assert s.set_t(e.key, 9) == pytest.approx(1.6) and e.u == 1.0, "t is clamped to [0, t_max]"
    assert other.u == 0.5, "the other identity keeps its own setting"
    assert s.slider_values(e) == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6]), "the raw view's positions are t's"
    s.set_raw_t(False)
    assert s.slider_values(e) == pytest.approx([0.0, 0.4, 1.28, 1.6]), "u = 0, 0.4, 0.8, 1 through the dial"
    assert e.u == 1.0
    s.close()


def test_an_adapter_file_without_a_dial_map_gives_the_raw_knob(res, trained, tmp_path):
    s, e = _restored(res, _adapter_file(trained, tmp_path, None))
    assert e.adapter.dial is None
    assert s.set_u(e.key, 0.5) == 0.5 and e.t == pytest.approx(0.8), "u = 0.5 is t = 0.5 * t_max"
    _, by_u = s.render_rows(e.key, u=0.5)
    _, by_t = s.render_rows(e.key, 0.8)
    assert torch.equal(by_u, by_t) and e.u == pytest.approx(0.5)
    c = s.curve(e.key)
    assert c["dial"] is None and c["t"] == pytest.approx(list(np.linspace(0, 1.6, 9)))
    s.close()


# -- jobs, cancellation, queue ------------------------------------------------------------------------------------
def test_cancel_keeps_earlier_adapters(res, trained):
    studio, entry, _ = trained
    _, kept = studio.render_rows(entry.key, entry.t_max)
    new = studio.add_identity(200_005)
    studio.start_forget(new.key, steps=500)
    deadline = time.time() + 60
    while (studio.status().step < 1) and time.time() < deadline:
        time.sleep(0.05)
    assert studio.cancel()
    st = _wait(studio)
    assert st.state == "cancelled" and "Cancelled" in st.text()
    assert not new.ready and entry.ready
    studio.remove(new.key)
    _, again = studio.render_rows(entry.key, entry.t_max)
    assert torch.equal(kept, again)


def test_queue_limits_jobs_and_reports_positions(res):
    queue = JobQueue(1)
    a, b = _studio(res, queue), _studio(res, queue)
    a.add_identity(200_006)
    b.add_identity(200_007)
    a.start_forget(steps=500)
    deadline = time.time() + 30
    while a.status().state == "queued" and time.time() < deadline:
        time.sleep(0.02)
    b.start_forget(steps=500)
    deadline = time.time() + 10
    while b.status().queue_position is None and time.time() < deadline:
        time.sleep(0.02)
    st = b.status()
    assert st.state == "queued" and st.queue_position == 1 and "place 1 in the queue" in st.text()
    deadline = time.time() + 60
    while a.status().step < 2 and time.time() < deadline:  # once the job ahead has made progress: an estimate
        time.sleep(0.05)
    assert "yours should start in about" in b.status().text(), b.status().text()
    b.cancel()
    assert _wait(b, 10).state == "cancelled" and b.status().step == 0, "a waiting job is cancelled without running"
    task = a.task
    a.close()
    a.join(30)
    assert task.state == "cancelled" and queue.running == 0 and queue.waiting == 0


def test_job_queue_is_fifo_with_a_limit():
    q = JobQueue(2)
    order, started = [], threading.Barrier(2)
    tickets = [object() for _ in range(4)]
    assert q.acquire(tickets[0]) and q.acquire(tickets[1])
    assert q.position(tickets[0]) == 0

    def waiter(i):
        if i == 2:
            started.wait()
        q.acquire(tickets[i])
        order.append(i)

    threads = [threading.Thread(target=waiter, args=(i,)) for i in (2, 3)]
    threads[0].start()
    started.wait()
    time.sleep(0.1)
    threads[1].start()
    time.sleep(0.2)
    assert q.position(tickets[2]) == 1 and q.position(tickets[3]) == 2 and q.waiting == 2
    q.release(tickets[0])
    q.release(tickets[1])
    for t in threads:
        t.join(5)
    assert order == [2, 3] and q.running == 2
    assert not q.acquire(object(), should_stop=lambda: True)
    with pytest.raises(ValueError):
        JobQueue(0)


# -- isolation between sessions --------------------------------------------------------------------------------------
def test_sessions_never_see_each_others_adapters(res, trained):
    studio, entry, _ = trained
    other = _studio(res)
    e = other.add_identity(200_001)  # the same face, not forgotten in this session
    base_before, base_after = other.render_rows(e.key, 0.0)
    assert torch.equal(base_before, base_after)
    errors = []

    def hammer(s, key, ts, check):
        try:
            for t in ts:
                b, a = s._rows_u8(s.get(key), t)[:2]
                check(b, a)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    def unchanged(b, a):
        assert torch.equal(b, a), "another session's adapter leaked into this render"

    studio._cache.clear()
    busy = threading.Thread(target=hammer, args=(studio, entry.key, [0.35, 0.65, 0.95, 1.25, 1.55], lambda b, a: None))
    calm = threading.Thread(target=hammer, args=(other, e.key, [0.0] * 40, unchanged))
    # a training job in a third session runs on the same base at the same time: it must not leak either
    third = _studio(res)
    third.add_identity(200_008)
    third.start_forget(steps=3)
    busy.start()
    calm.start()
    busy.join(120)
    calm.join(120)
    assert not busy.is_alive() and not calm.is_alive()
    assert not errors, errors
    assert active_adapters() == ()
    with torch.inference_mode():
        direct = res.base.render(e.latent.expand(3, -1), e.grid_views)
    assert (direct - base_before[:3]).abs().max() <= 0.5 / 255 + 1e-6
    assert _wait(third).state == "done"
    assert all(len(m._forward_hooks) == 1 for m in res.base.adapter_sites.values()), \
        "one permanent site hook each, never one per adapter or per render"
    third.close()
    other.close()


def test_close_cancels_and_forgets_everything(res):
    studio = _studio(res)
    studio.add_identity(200_004)
    task = studio.start_forget(steps=500)
    studio.close()
    studio.join(30)
    assert task.state == "cancelled" and not studio.entries and studio.status() is None
    with pytest.raises(StudioError, match="session has ended"):
        studio.add_identity(200_004)


class _Ticket:
    def __init__(self, left):
        self.left = left

    def expected_remaining(self):
        return self.left


def test_queue_estimates_the_wait_from_the_jobs_ahead():
    q = JobQueue(1)
    running, first, second = _Ticket(30.0), _Ticket(50.0), _Ticket(20.0)
    assert q.acquire(running)
    q._waiting.extend([first, second])  # as two waiting threads would have put them
    assert q.wait_estimate(first) == pytest.approx(30.0)
    assert q.wait_estimate(second) == pytest.approx(80.0)
    running.left = None  # nothing known yet about the job ahead: no number is made up
    assert q.wait_estimate(second) is None
    q2 = JobQueue(2)  # two slots: the second waiter takes whichever frees first
    a, b, w1, w2 = _Ticket(10.0), _Ticket(40.0), _Ticket(100.0), _Ticket(5.0)
    q2.acquire(a)
    q2.acquire(b)
    q2._waiting.extend([w1, w2])
    assert q2.wait_estimate(w1) == pytest.approx(10.0) and q2.wait_estimate(w2) == pytest.approx(40.0)
    assert q2.wait_estimate(a) is None, "a running job does not wait"


def test_queued_status_says_place_and_estimate():
    from legato_core.studio import JobStatus, JobTimes

    st = JobStatus("2", "face", "queued", queue_position=2, queue_wait=131.0, queue_running=1)
    assert st.text() == ("Waiting for the server: place 2 in the queue (1 job runs at a time, 1 running now); "
                         "yours should start in about 2 min 10 s.")
    st.queue_wait = 12
    assert "should start in about 10 s" in st.text()
    st.queue_wait = None
    assert "an estimate follows" in st.text()
    times = JobTimes(weight=0.5)
    times.record(steps=10, train_seconds=20.0, curve_seconds=8.0)
    times.record(steps=10, train_seconds=40.0)
    assert times.step_seconds == pytest.approx(3.0) and times.curve_seconds == pytest.approx(8.0)


def test_each_identity_keeps_its_own_run_and_status_line(res):
    """Issue 30: the page's loss plot, preview and status line show the selected identity's run, never another's."""
    studio = _studio(res)
    a = studio.add_identity(200_027)
    studio.start_forget(a.key, steps=3)
    _wait(studio)
    b = studio.add_identity(200_028)
    assert studio.run_of(b.key) is None, "b has never trained: no losses, no preview"
    assert studio.status_text(b.key) == f"{b.label}: not forgotten yet; press Forget to train its adapter."
    run = studio.run_of(a.key)
    assert run.state == "done" and len(run.losses) == 3 and run.preview is not None
    assert studio.status_text(a.key).startswith("Done: face-world #200027 forgotten")
    studio.start_forget(b.key, steps=500)  # b trains: a's panels stay a's
    assert len(studio.run_of(a.key).losses) == 3 and studio.run_of(b.key).key == b.key
    assert "Meanwhile: " in studio.status_text(a.key)
    studio.cancel()
    _wait(studio)
    studio.remove(a.key)
    assert a.run is None
    studio.close()


# -- robust mode and the attack button ------------------------------------------------------------------------------
def test_the_attack_button_needs_a_forgotten_identity_and_reports_the_judges_verdict(res, trained):
    studio, entry, _ = trained
    fresh = studio.add_identity(200_005)
    with pytest.raises(StudioError, match="not forgotten yet"):
        studio.attack(fresh.key)
    studio.remove(fresh.key)
    out = studio.attack(entry.key, steps=4)
    assert out["held"] == (out["similarity"] < out["threshold"]) and out["robust"] is False
    assert out["u"] == entry.u and out["t"] == pytest.approx(entry.t) and out["name"] == entry.name
    assert out["image"].size[0] > 2 * 64 and out["image"].mode == "RGB"


def test_a_robust_session_trains_gated_adapters_and_a_plain_one_does_not(res, tmp_path):
    studio = _studio(res, session_root=tmp_path)
    try:
        studio.set_robust(True)
        entry = studio.add_identity(200_009)
        studio.start_forget(entry.key, steps=2)
        _wait(studio)
        assert entry.adapter.gate is not None and entry.adapter.description["robust"]["threshold"] > 0
        studio.set_robust(False)
        plain = studio.add_identity(200_011)
        studio.start_forget(plain.key, steps=2)
        _wait(studio)
        assert plain.adapter.gate is None
    finally:
        studio.close()
