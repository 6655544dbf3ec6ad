"""End to end in Chromium (Playwright): drop a face, forget it, move the forgetting slider (and switch to the advanced
raw-t view), get an error toast for a bad file.

Screenshots of the main states go to $LEGATO_SCREENSHOTS (docs/screenshots/ is made with
``LEGATO_SCREENSHOTS=docs/screenshots LEGATO_BROWSER_STEPS=100``), else to a temporary folder so a test run leaves
the tree clean. Skipped when Playwright or /usr/bin/chromium is missing.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from legato_core import faceworld
from legato_core.images import to_pil

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("LEGATO_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHOTS = os.environ.get("LEGATO_SCREENSHOTS")
STEPS = int(os.environ.get("LEGATO_BROWSER_STEPS", 8))  # e.g. 100 for screenshots that show real forgetting
X0, Y0, CELL, GAP, N_TARGET = 112, 32, 128, 16, 3  # grid layout, as in legato_core.studio.Studio


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set LEGATO_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(browser, app_server):
    return app_server  # Chromium first, then the server


def _grid(page) -> tuple[str, np.ndarray]:
    src = page.locator("#grid img").get_attribute("src")
    body = page.request.get(src).body()
    return src, np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=int)


def _rows(im: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom grid rows, without the two edge lines a JPEG decoder blends with their surroundings."""
    return im[Y0 + 2:Y0 + CELL - 2, X0:], im[Y0 + CELL + GAP + 2:Y0 + 2 * CELL + GAP - 2, X0:]


def _wait_new_grid(page, old_src: str, timeout: float = 30_000) -> None:
    page.wait_for_function("(old) => { const i = document.querySelector('#grid img'); return i && i.src !== old; }",
                           arg=old_src, timeout=timeout)


def _status(page) -> str:
    return page.locator("#status textarea").input_value()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(SHOTS) if SHOTS else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shot(page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / name), full_page=True)


def test_drop_forget_slide_and_bad_file(app_url, browser, shots, tmp_path):
    face = tmp_path / "my-face.png"
    to_pil(faceworld.render([200_003], 0)[0]).resize((256, 256), Image.BICUBIC).save(face)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    outside = []  # the page must not reach anything but the app (no CDN, fonts, analytics)
    page.on("request", lambda r: None if r.url.startswith((app_url.rstrip("/"), "data:", "blob:"))
            else outside.append(r.url))
    page.goto(app_url)
    page.wait_for_selector("#examples img")
    _shot(page, shots, "01_start.png")

    # drop a face: it is inverted and shown beside its inversion, with the grid at t = 0
    t0 = time.time()
    page.locator("#face_upload input[type=file]").set_input_files(str(face))
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Added')", timeout=60_000)
    page.wait_for_selector("#grid img")
    first_render = time.time() - t0
    assert page.locator("#source_image img").count() == 1 and page.locator("#inversion_image img").count() == 1
    _, grid0 = _grid(page)
    top, bottom = _rows(grid0)
    assert np.abs(top - bottom).max() <= 2
    _shot(page, shots, "02_face_added.png")

    # forget with a few steps: live status, loss curve, preview; then the slider comes alive at u = 1 (t = T)
    steps = page.locator("#steps input[type=number]")
    steps.fill(str(STEPS))
    steps.press("Enter")
    t0 = time.time()
    page.click("#forget_btn")
    page.wait_for_function("document.querySelector('#status textarea').value.includes('step')", timeout=60_000)
    page.click("#forget_btn")  # a second job in the same session is refused politely
    page.wait_for_selector(".toast-body:has-text('Only one job per session')", timeout=10_000)
    page.wait_for_selector("#loss_plot .js-plotly-plot", timeout=30_000)
    _shot(page, shots, "03_training.png")
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Done')",
                           timeout=180_000 + 2_000 * STEPS)
    forget_seconds = time.time() - t0
    page.wait_for_selector("#curve .js-plotly-plot", timeout=30_000)
    page.wait_for_function("document.querySelector('#u_slider input[type=range]').value === '1'", timeout=10_000)
    assert "0 = the original model, 1 = fully forgotten" in page.locator("#u_slider").inner_text()
    page.wait_for_selector(".toast-body", state="detached", timeout=15_000)  # the warning toast has gone
    _, grid_t = _grid(page)
    top, bottom = _rows(grid_t)
    w = N_TARGET * CELL
    assert np.abs(top[:, :w] - bottom[:, :w]).mean() > 1, "at t = T the forgotten face must look different"
    _shot(page, shots, "04_forgotten_u1.png")

    # slide to u = 0.5, then u = 0: the images change with u and are the originals at u = 0 (when screenshots are
    # kept, a series at u = 1/4, 1/2, 3/4 on the way)
    slider = page.locator("#u_slider input[type=range]")
    latencies = []
    for value in ("0.25", "0.5", "0.75", "0") if SHOTS else ("0.5", "0"):
        src_before = page.locator("#grid img").get_attribute("src")
        t1 = time.time()
        slider.fill(value)  # an "input" event, as while dragging
        _wait_new_grid(page, src_before)
        slider.dispatch_event("pointerup")  # the end of the drag: the curve's marker follows
        page.wait_for_function("(v) => { const p = document.querySelector('#curve .js-plotly-plot');"
                               " return !!p && !!p.data && p.data.some(tr => tr.mode === 'markers'"
                               " && Math.abs(tr.x[0] - parseFloat(v)) < 1e-6); }", arg=value, timeout=10_000)
        page.wait_for_function("document.querySelector('#grid img').complete")
        latencies.append(time.time() - t1)
        if value != "0":
            _shot(page, shots, f"05_slider_u{value}.png")
        if value == "0.5":
            _, grid_mid = _grid(page)
            assert np.abs(grid_mid - grid_t).mean() > 0.1, "the grid must change with u"
            _check_raw_t_view(page, 0.5)
    _, grid_zero = _grid(page)
    top, bottom = _rows(grid_zero)
    assert np.abs(top - bottom).max() <= 2, "u = 0 must show exactly the original model"
    assert np.abs(grid_zero[Y0:] - grid0[Y0:]).max() <= 2, "u = 0 equals the grid from before training"
    _shot(page, shots, "06_slider_u0.png")

    # a bad file: clear error toast, nothing added
    bad = tmp_path / "broken.png"
    bad.write_bytes(face.read_bytes()[:300])
    page.locator("#face_upload input[type=file]").set_input_files(str(bad))
    toast = page.wait_for_selector(".toast-body:has-text('Cannot use this file')", timeout=30_000)
    assert "truncated" in toast.inner_text()
    time.sleep(1.0)  # let the toast finish sliding in
    _shot(page, shots, "07_bad_file.png")
    assert page.locator("#status textarea").count() == 1, "only the upload box may show the error"
    assert page.locator("#grid img").count() == 1
    page.locator("#face_upload input[type=file]").set_input_files(str(face))  # and a good file still works
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Added')"
                           " && document.querySelector('#identity input').value.startsWith('2')", timeout=60_000)
    page.close()
    assert not outside, f"requests left the machine: {outside[:5]}"
    print(f"browser: first render {first_render:.2f} s after the drop; forget {STEPS} steps {forget_seconds:.1f} s; "
          f"slider -> new grid on screen {', '.join(f'{1000 * x:.0f} ms' for x in latencies)}")


def _check_raw_t_view(page, u: float) -> None:
    """The advanced box shows the raw-t slider at the t the adapter's dial gives the position ``u``, without a new
    render; unticked, the forgetting slider is back at ``u``."""
    import app

    entry = next(iter(app.SESSIONS.values())).get("1")  # this page is the only session of this server
    src = page.locator("#grid img").get_attribute("src")
    page.locator("#raw_t input[type=checkbox]").check()
    page.wait_for_selector("#t_slider input[type=number]", state="visible", timeout=10_000)
    page.wait_for_selector("#u_slider input[type=range]", state="hidden", timeout=10_000)
    shown = float(page.locator("#t_slider input[type=number]").input_value())
    assert shown == pytest.approx(entry.adapter.t_at(u), abs=1e-4), "the same setting, shown as t"
    assert entry.u == u and page.locator("#grid img").get_attribute("src") == src, "and the same render"
    page.locator("#raw_t input[type=checkbox]").uncheck()
    page.wait_for_selector("#u_slider input[type=number]", state="visible", timeout=10_000)
    assert float(page.locator("#u_slider input[type=number]").input_value()) == u


def test_a_real_photo_shows_the_face_found_and_the_crop_used(app_url, browser, shots, tmp_path):
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (installed with insightface) ships the photo")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:  # closed whatever happens: a page left open is a session the next test would meet
        page.goto(app_url)
        page.wait_for_selector("#examples img")
        page.wait_for_selector("#status textarea")
        page.locator("#face_upload input[type=file]").set_input_files(str(photo))
        page.wait_for_function("(() => { const s = document.querySelector('#status textarea');"
                               " return !!s && s.value.startsWith('Added astronaut.png'); })()", timeout=60_000)
        page.wait_for_selector("#face_crop img", timeout=10_000)
        found = page.request.get(page.locator("#face_found img").get_attribute("src")).body()
        crop = page.request.get(page.locator("#face_crop img").get_attribute("src")).body()
        found = np.asarray(Image.open(io.BytesIO(found)).convert("RGB"), dtype=int)
        crop = np.asarray(Image.open(io.BytesIO(crop)).convert("RGB"), dtype=int)
        assert found.shape[:2] == (256, 256)  # the photo, small, with the box drawn in green
        green = (found[..., 1] > 180) & (found[..., 0] < 100) & (found[..., 2] < 120)
        ys, xs = np.nonzero(green)
        assert 80 < xs.mean() < 140 and 20 < ys.mean() < 100, "the green box is around the astronaut's face"
        assert crop.shape[0] == crop.shape[1]
        assert "nearest face-world likeness" in page.locator("#face_note").inner_text()
        _shot(page, shots, "08_real_photo.png")
    finally:
        page.close()


def _select_identity(page, label_start: str) -> None:
    """Pick an identity in the dropdown as a person would (open it, click the option), and wait for the server's
    answer (its grid, slider and the text under the grid, which names the identity shown)."""
    page.locator("#identity input").click()
    page.locator(f"#identity li[role=option][aria-label^='{label_start}']").first.click()
    page.wait_for_function("(v) => document.querySelector('#identity input').value.startsWith(v)", arg=label_start,
                           timeout=30_000)
    page.wait_for_function("(v) => Array.from(document.querySelectorAll('#composition p'))"
                           ".some(p => p.innerText.startsWith('Bottom row: ' + v))", arg=label_start,
                           timeout=30_000)


def _composition(page) -> str:
    """The text under the grid (its paragraphs only: a "processing" line of an event in flight is not part of it)."""
    return page.evaluate("Array.from(document.querySelectorAll('#composition p')).map(p => p.innerText)"
                         ".join(' ').trim()")


def test_composition_switch_removal_and_privacy_on_close(app_url, browser, shots, tmp_path):
    """Issue 16: u = 0 is the original unless composition is switched on, the grid says what it composes, an
    identity can be removed, a refused file leaves the upload box, and closing the tab deletes the session's files."""
    import gradio as gr

    import app

    face = tmp_path / "my-face.png"
    to_pil(faceworld.render([200_004], 0)[0]).resize((256, 256), Image.BICUBIC).save(face)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app_url)
    page.wait_for_selector("#examples img")
    assert "deleted when you close the tab" in page.locator("#note").inner_text()

    # a refused file clears itself from the upload box
    bad = tmp_path / "broken.png"
    bad.write_bytes(face.read_bytes()[:300])
    page.locator("#face_upload input[type=file]").set_input_files(str(bad))
    page.wait_for_selector(".toast-body:has-text('Cannot use this file')", timeout=30_000)
    page.wait_for_function("!document.querySelector('#face_upload img')", timeout=15_000)

    # one forgotten identity, its adapter downloaded and restored: two forgotten identities in this session
    page.locator("#face_upload input[type=file]").set_input_files(str(face))
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Added')", timeout=60_000)
    page.wait_for_function("!document.querySelector('#face_upload img')", timeout=15_000)
    steps = page.locator("#steps input[type=number]")
    steps.fill(str(STEPS))
    steps.press("Enter")
    page.click("#forget_btn")
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Done')",
                           timeout=180_000 + 2_000 * STEPS)
    page.wait_for_function("!document.querySelector('#download_btn').disabled", timeout=10_000)
    with page.expect_download() as info:
        page.click("#download_btn")
    adapter = tmp_path / "adapter.safetensors"
    info.value.save_as(adapter)
    assert adapter.stat().st_size > 1000
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not an adapter")
    page.locator("#adapter_upload input[type=file]").set_input_files(str(junk))  # refused: it clears itself
    page.wait_for_selector(".toast-body:has-text('not a legato adapter')", timeout=30_000)
    page.wait_for_function("!document.querySelector('#adapter_upload .file-preview')", timeout=15_000)
    page.locator("#adapter_upload input[type=file]").set_input_files(str(adapter))
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Restored')",
                           timeout=120_000)
    page.wait_for_function("!document.querySelector('#adapter_upload .file-preview')", timeout=15_000)

    # back on identity 1 at u = 0: exactly the original, and the grid says the other one is not applied
    _select_identity(page, "1 · ")
    slider = page.locator("#u_slider input[type=range]")
    src = page.locator("#grid img").get_attribute("src")
    slider.fill("0")
    _wait_new_grid(page, src)
    deadline, diff = time.time() + 15, None
    while time.time() < deadline:  # the last grid the page receives is the one for t = 0
        page.wait_for_function("document.querySelector('#grid img').complete")
        _, grid = _grid(page)
        top, bottom = _rows(grid)
        diff = np.abs(top - bottom).max()
        if diff <= 2:
            break
        time.sleep(0.3)
    if diff > 2:
        _shot(page, shots, "failed_t0_rows.png")
    assert diff <= 2, (f"u = 0 is exactly the original while composition is off (max diff {diff}; slider "
                       f"{slider.input_value()}; {_composition(page)!r})")
    assert "composition is off" in _composition(page)

    # composition on: identity 2's adapter acts at its own t, and the text under the grid says so
    src = page.locator("#grid img").get_attribute("src")
    page.locator("#compose input[type=checkbox]").check()
    _wait_new_grid(page, src)
    page.wait_for_function("document.querySelector('#grid img').complete")
    _, grid = _grid(page)
    top, bottom = _rows(grid)
    assert np.abs(top - bottom).mean() > 0.2, "composed: the other forgotten identity acts in the bottom row"
    text = _composition(page)
    assert text.startswith("Composition is on: the bottom row applies 1 · my-face.png at u = 0.00 (t = 0.00) "
                           "together with 2 · my-face.png at u = 1.00 (t = 1.60)."), text
    footer = grid[Y0 + 2 * CELL + GAP + 16:]
    assert footer.shape[0] >= 20 and footer.min() < 80, "the grid image says so too, in dark text under its rows"
    time.sleep(0.5)
    _shot(page, shots, "08_composed.png")
    src = page.locator("#grid img").get_attribute("src")
    page.locator("#compose input[type=checkbox]").uncheck()
    _wait_new_grid(page, src)
    page.wait_for_function("document.querySelector('#grid img').complete")
    _, grid = _grid(page)
    top, bottom = _rows(grid)
    assert np.abs(top - bottom).max() <= 2

    # remove identity 2 (its adapter too)
    _select_identity(page, "2 · ")
    page.click("#remove_btn")
    page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Removed')",
                           timeout=30_000)
    page.locator("#identity input").click()
    page.wait_for_selector("#identity li[role=option]")
    options = [o.get_attribute("aria-label") for o in page.locator("#identity li[role=option]").all()]
    page.keyboard.press("Escape")
    assert options and not any(o.startswith("2 · ") for o in options), options

    # privacy: the session's folder holds what the page shows; closing the tab deletes it
    assert len(app.SESSIONS) == 1, "this page is the only session of this server"
    studio = next(iter(app.SESSIONS.values()))
    folder, files = studio.folder, studio.files()
    assert folder is not None and files, "the session has files while it is open"
    cache = Path(gr.utils.get_upload_folder())
    assert not [p for p in cache.rglob("my-face*") if p.is_file() and not p.is_relative_to(folder)], \
        "the uploaded photo is deleted once read"
    assert not [p for p in cache.rglob("adapter*.safetensors") if p.is_file()], "so is the uploaded adapter"
    page.close()
    deadline = time.time() + 30
    while (folder.exists() or app.SESSIONS) and time.time() < deadline:
        time.sleep(0.2)
    assert not folder.exists() and not any(p.exists() for p in files), "closing the tab deletes the session's files"
    assert not app.SESSIONS and studio.closed and not studio.entries
    print(f"browser: the session's {len(files)} files were gone {30 - (deadline - time.time()):.1f} s after the tab "
          "closed")


def _cache_files() -> set[Path]:
    """Every file in the framework's cache (gradio's GRADIO_TEMP_DIR, which the app owns), session folders included."""
    import gradio as gr

    return {p for p in Path(gr.utils.get_upload_folder()).rglob("*") if p.is_file()}


def _pick(page, label_start: str, status_start: str) -> None:
    """Select an identity in the dropdown as a person would, and wait for its status line."""
    page.locator("#identity input").click()
    page.locator(f"#identity li[role=option][aria-label^='{label_start}']").first.click()
    page.wait_for_function("(v) => document.querySelector('#status textarea').value.startsWith(v)", arg=status_start,
                           timeout=30_000)


def test_every_panel_follows_the_selected_identity_and_end_session_leaves_nothing(app_url, browser, shots, tmp_path):
    """Issue 30: the loss plot, the preview, "face found" and the status line show the selected identity or nothing;
    after "End session" the page shows nothing of it, no file of it is left in the framework's cache, and its file
    URLs answer 404."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image (installed with insightface) ships the photo")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    try:
        page.goto(app_url)
        page.wait_for_selector("#examples img")
        page.wait_for_selector("#status textarea")
        before = _cache_files()

        # identity 1: a face-world example (no face detection), forgotten with a few steps
        page.locator("#examples img").first.click()
        page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Added face-world')",
                               timeout=60_000)
        steps = page.locator("#steps input[type=number]")
        steps.fill(str(min(STEPS, 4)))
        steps.press("Enter")
        page.click("#forget_btn")
        page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Done')",
                               timeout=180_000)
        page.wait_for_selector("#loss_plot .js-plotly-plot", timeout=30_000)
        page.wait_for_selector("#preview img", timeout=30_000)

        # identity 2: a photo; the panels are its own: a face found, no training run yet
        page.locator("#face_upload input[type=file]").set_input_files(str(photo))
        page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Added astronaut.png')",
                               timeout=60_000)
        page.wait_for_selector("#face_found img", timeout=15_000)
        page.wait_for_selector("#loss_plot .js-plotly-plot", state="detached", timeout=15_000)
        page.wait_for_selector("#preview img", state="detached", timeout=15_000)

        _pick(page, "1 · ", "Done: face-world #")  # back to 1: its run, and no face found
        page.wait_for_selector("#loss_plot .js-plotly-plot", timeout=15_000)
        page.wait_for_selector("#preview img", timeout=15_000)
        page.wait_for_selector("#face_found img", state="hidden", timeout=15_000)
        _shot(page, shots, "09_switch_to_1.png")
        preview_src = page.locator("#preview img").get_attribute("src")

        _pick(page, "2 · ", "2 · astronaut.png: not forgotten yet")  # and 2 again
        page.wait_for_selector("#loss_plot .js-plotly-plot", state="detached", timeout=15_000)
        page.wait_for_selector("#preview img", state="detached", timeout=15_000)
        page.wait_for_selector("#face_found img", state="visible", timeout=15_000)
        _shot(page, shots, "10_switch_to_2.png")
        shown = [page.locator(f"#{elem} img").get_attribute("src")
                 for elem in ("face_found", "face_crop", "source_image", "inversion_image", "grid")] + [preview_src]
        assert all(page.request.get(src).status == 200 for src in shown)
        made = _cache_files() - before
        assert any(p.name.startswith("face-found") for p in made), "the face found is served from the session"

        # End session: nothing of it on the page, in the cache, or at its URLs
        page.click("#end_btn")
        page.wait_for_function("document.querySelector('#status textarea').value.startsWith('Session ended')",
                               timeout=30_000)
        for elem in ("face_found", "face_crop", "source_image", "inversion_image", "grid", "preview"):
            page.wait_for_selector(f"#{elem} img", state="hidden", timeout=15_000)
        assert page.locator("#loss_plot .js-plotly-plot").count() == 0
        assert page.locator("#curve .js-plotly-plot").count() == 0
        assert page.locator("#identity input").input_value() == ""
        left = _cache_files() - before
        assert not left, f"files of the ended session left in the framework's cache: {sorted(map(str, left))[:5]}"
        statuses = [page.request.get(src).status for src in shown]
        assert statuses == [404] * len(shown), statuses
        _shot(page, shots, "11_session_ended.png")
    finally:
        page.close()
