"""The gradio app through its API (gradio_client): add a face, forget it, dial t; bad files get clear errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from legato_core import faceworld
from legato_core.images import to_pil

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

STEPS = 6
STATUS = 6  # index of the status text in the outputs of /add_image, /poll, /import_adapter (gr.State is left out)
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
    for t in (0.0, 0.4, 0.8, 1.6, 0.0):
        t1 = time.time()
        renders[t] = c.predict(t, "1", api_name="/render")
        print(f"render t={t}: {1000 * (time.time() - t1):.0f} ms via the API")
    top, bottom = _rows(renders[0.0])
    assert np.abs(top - bottom).max() <= 2, "t = 0 must show exactly the original model"
    assert np.abs(np.asarray(Image.open(renders[0.0]), int) - np.asarray(Image.open(grid0), int)).max() <= 2
    w = N_TARGET * CELL
    top, bottom = _rows(renders[1.6])
    assert np.abs(top[:, :w] - bottom[:, :w]).mean() > 1, "at t = T the forgotten face must change"
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
