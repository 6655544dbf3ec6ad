"""The demo's session layer: identities, background jobs, the queue, live renders, curves, adapters in and out,
and isolation between sessions that share one generator."""

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
from legato_core.adapters import ODEAdapter, active_adapters
from legato_core.images import ImageError, to_pil
from legato_core.studio import BusyError, JobQueue, Resources, Studio, StudioError

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
    expected = {"text": "not an image", "empty": "empty", "truncated": "truncated", "huge": "too large",
                "bomb": "too large"}[kind]
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
    with pytest.raises(StudioError, match="non-negative"):
        studio.add_identity(-3)
    with pytest.raises(StudioError, match="whole number"):
        studio.add_identity("abc")
    with pytest.raises(StudioError, match="add a face first"):
        studio.start_forget()
    studio.add_identity(200_003)
    with pytest.raises(StudioError, match="already holds 1"):
        studio.add_identity(200_004)


# -- forgetting and the intensity knob ----------------------------------------------------------------------------
def test_job_reports_progress_and_history(trained):
    studio, entry, _ = trained
    st = studio.status()
    assert st.state == "done" and st.step == st.steps == STEPS
    assert len(st.losses) == STEPS and {"total", "identity", "preservation"} <= set(st.losses[0])
    assert st.preview is not None and st.preview.shape == (3, 64, 64)
    assert "Done" in st.text() and entry.ready and entry.t == pytest.approx(entry.t_max)


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


def test_forgetting_curve_has_nine_points_and_starts_at_identity(trained):
    studio, entry, _ = trained
    c = studio.curve(entry.key)
    assert len(c["t"]) == len(c["id_target"]) == len(c["retention"]) == 9
    assert c["t"][0] == 0 and c["t"][-1] == pytest.approx(entry.t_max)
    assert c["id_target"][0] == pytest.approx(1.0, abs=1e-4) and c["retention"][0] == pytest.approx(1.0, abs=1e-4)
    assert 0 < c["threshold"] < 1 and c["current_t"] == entry.t
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
    _, both = s.render_rows(e1.key)
    assert (both - only_e1).abs().max() > 0, "every forgotten identity's adapter acts, each at its own t"
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
    b.cancel()
    assert _wait(b, 10).state == "cancelled" and b.status().step == 0, "a waiting job is cancelled without running"
    a.close()
    assert _wait(a, 30).state == "cancelled" and queue.running == 0 and queue.waiting == 0


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
    studio.start_forget(steps=500)
    studio.close()
    assert _wait(studio, 30).state == "cancelled" and not studio.entries
    with pytest.raises(StudioError, match="session has ended"):
        studio.add_identity(200_004)
