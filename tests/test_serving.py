"""The serving layer's small parts on their own: the page's sentences about composition and the slider's dial, and a
session's folder."""

import time
from dataclasses import dataclass
from pathlib import Path

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


# -- issue 30: the framework's cache emptied at start, gone files answer 404, measured time estimates -------------
def test_a_server_claims_an_empty_cache_folder_and_deletes_those_of_stopped_servers(tmp_path):
    import os

    from legato_core.serving.cache_folder import cache_parent, claim_cache_folder

    stopped = tmp_path / "legato-server-999999999"  # a server that no longer runs: its session files too
    (stopped / "sessions" / "legato-session-x").mkdir(parents=True)
    (stopped / "abc" / "image.webp").parent.mkdir()
    (stopped / "abc" / "image.webp").write_bytes(b"a face preview")
    running = tmp_path / f"legato-server-{os.getppid()}"  # another server, still running: kept
    running.mkdir()
    earlier = tmp_path / "legato-server-4242"  # this pid's folder left by an earlier process (pids are reused)
    (earlier / "left.png").parent.mkdir()
    (earlier / "left.png").write_bytes(b"x")
    legacy = tmp_path / "legato-sessions-999999998"  # an older server's session root
    legacy.mkdir()
    other = tmp_path / "someone-else"  # not a server folder of this app: never touched
    other.mkdir()
    own = claim_cache_folder(tmp_path, pid=4242)
    assert own == earlier and own.is_dir() and not any(own.iterdir())
    assert not stopped.exists() and not legacy.exists() and running.exists() and other.exists()
    assert cache_parent({}, tmp_path / "default") == tmp_path / "default"
    assert cache_parent({"GRADIO_TEMP_DIR": str(tmp_path / "g")}, "/x") == tmp_path / "g"
    assert cache_parent({"GRADIO_TEMP_DIR": str(own)}, "/x") == tmp_path, "a child process's parent is not nested"
    assert cache_parent({"LEGATO_CACHE_DIR": "/c", "GRADIO_TEMP_DIR": "/g"}, "/x") == Path("/c")


def test_a_file_url_whose_file_is_gone_answers_404(tmp_path):
    import asyncio

    from legato_core.serving.missing_files import MissingFileAs404

    served = []

    async def gradio_like(scope, receive, send):  # serves the file, or fails the way a file deleted mid-way does
        served.append(scope["path"])
        if scope["path"].endswith("racing.png"):
            raise RuntimeError("File at path racing.png does not exist.")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"image"})

    def get(path: str) -> int:
        messages = []

        async def send(message):
            messages.append(message)

        asyncio.run(MissingFileAs404(gradio_like)({"type": "http", "path": path}, None, send))
        return messages[0]["status"]

    kept = tmp_path / "grid.1.jpeg"
    kept.write_bytes(b"x")
    assert get(f"/gradio_api/file={kept}") == 200
    assert get(f"/gradio_api/file={tmp_path / 'deleted.png'}") == 404 and len(served) == 1, "answered before gradio"
    assert get("/gradio_api/info") == 200, "other routes pass through"
    racing = tmp_path / "racing.png"
    racing.write_bytes(b"x")

    async def delete_then_serve(scope, receive, send):
        racing.unlink()  # the session ended between the check and the read
        await gradio_like(scope, receive, send)

    messages = []

    async def send(message):
        messages.append(message)

    asyncio.run(MissingFileAs404(delete_then_serve)({"type": "http", "path": f"/gradio_api/file={racing}"}, None,
                                                    send))
    assert messages[0]["status"] == 404


def test_the_time_left_comes_from_this_runs_measured_steps():
    from legato_core.serving.jobs import JobStatus
    from legato_core.serving.step_clock import StepClock

    now = [100.0]
    clock = StepClock(clock=lambda: now[0])
    clock.start()
    now[0] += 12.0  # set-up and the first step: an estimate from it alone would say 250 * 12 s
    clock.step(1)
    assert clock.per_step is None and clock.remaining(250) is None, "no number from the first step alone"
    for step in range(2, 11):
        now[0] += 0.3
        clock.step(step)
    assert clock.per_step == pytest.approx(0.3)
    assert clock.remaining(250) == pytest.approx(240 * 0.3)
    assert clock.setup_seconds == pytest.approx(11.7)
    st = JobStatus("1", "Ada", "training", step=1, steps=250, elapsed=12.0)
    assert st.text() == "Forgetting Ada: step 1/250 · 12.0 s · measuring its speed"
    st.step, st.eta = 10, clock.remaining(250)
    assert st.text().endswith("· about 1 min 10 s left")
    for step in range(11, 40):  # a slower stretch (another job started): the window follows it
        now[0] += 0.6
        clock.step(step)
    assert clock.per_step == pytest.approx(0.6)


def test_a_waiting_job_is_told_the_wait_from_measured_speeds(tiny_backend):
    from legato_core.serving.jobs import ForgetTask
    from legato_core.serving.queue import JobQueue, JobTimes
    from legato_core.serving.resources import Resources
    from legato_core.serving.step_clock import StepClock
    from legato_core.unlearning.engine import ForgetConfig

    res = Resources(tiny_backend, curve_retained=2, judge=object())  # a judge: jobs measure a curve
    times, queue = JobTimes(), JobQueue(1)
    entry = type("E", (), {"key": "1", "name": "Ada", "latent": None, "view": None})()
    running = ForgetTask(res, queue, entry, ForgetConfig(steps=250), None, lambda t: None, times=times)
    waiting = ForgetTask(res, queue, entry, ForgetConfig(steps=100), None, lambda t: None, times=times)
    assert queue.acquire(running)
    queue._waiting.append(waiting)  # as its waiting thread would have put it
    running.state = "training"
    now = [0.0]
    running.clock = StepClock(clock=lambda: now[0])
    now[0] = 12.0
    running.clock.step(1)
    assert queue.wait_estimate(waiting) is None, "nothing measured yet: no number is made up"
    for step in range(2, 51):
        now[0] += 0.3
        running.clock.step(step)
    running.events = [type("Ev", (), {"step": 50})()]
    assert queue.wait_estimate(waiting) == pytest.approx(200 * 0.3 + 20 * 0.3), \
        "the steps left at this run's speed, and its curve (never measured on this server yet) as 20 steps"
    running.state, running._eval_t0 = "evaluating", time.time()  # its curve, never measured on this server yet
    assert queue.wait_estimate(waiting) == pytest.approx(20 * 0.3, abs=0.2), "reckoned as 20 measured steps"
