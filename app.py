"""legato demo: make a face generator forget one face, then dial how much it is forgotten, continuously.

A thin gradio shell over :mod:`legato_core.studio` (one ``Studio`` per browser session). Run ``python app.py``
(``--help`` for flags); Hugging Face Spaces runs this file as is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from legato_core.serving.cache_folder import cache_parent, claim_cache_folder, remove_stopped_servers

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry
# gradio's cache is a folder of this server alone, emptied now: nothing of a session outlives a restart
os.environ["GRADIO_TEMP_DIR"] = str(claim_cache_folder(cache_parent(os.environ,
                                                                   Path(tempfile.gettempdir()) / "gradio")))

# isort: off
import legato_core.openmp  # noqa: F401 - sets the OpenMP wait policy; must run before torch loads
# isort: on
import argparse
import ctypes
import ctypes.util
import gc
import math
import shutil
import threading
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pydantic
import torch
from PIL import Image
from starlette.middleware import Middleware

from legato_core import faceworld
from legato_core.backends.registry import EMBEDDED_LABEL, BackendSpec
from legato_core.cli import add_backend_options
from legato_core.images import ImageError, to_pil
from legato_core.serving.missing_files import MissingFileAs404
from legato_core.serving.model_view import REQUEST_COLUMNS, table_rows
from legato_core.serving.text import dial_note
from legato_core.studio import (
    EXAMPLE_IDS,
    JOB_QUEUE,
    MAX_FACE_ID,
    MAX_IDENTITIES,
    MIN_FACE_ID,
    BusyError,
    Entry,
    Resources,
    Studio,
    StudioError,
    get_resources,
    set_resources,
)
from legato_core.unlearning.engine import ForgetConfig

DEFAULT_STEPS = int(os.environ.get("LEGATO_STEPS", ForgetConfig().steps))
MAX_STEPS = 600  # the steps slider's maximum; the API is held to the same range
MAX_FILE_SIZE = os.environ.get("LEGATO_MAX_FILE_SIZE", "10mb")
SHOW = 192  # display size of the 64x64 source / inversion / preview images
IDLE_MINUTES = float(os.environ.get("LEGATO_IDLE_MINUTES", 15))  # a session with no request for this long ends
CACHE_MINUTES = 10  # gradio's own cache: files older than this are deleted (checked every minute)
REAP_SECONDS = 20  # how often idle sessions are looked for
WATCH_SECONDS = float(os.environ.get("LEGATO_WATCH_SECONDS", 30))  # how often a page asks whether it timed out


def session_root() -> Path:
    """This server's folder for session folders: inside its gradio cache (so gradio serves the files from there
    instead of copying them)."""
    return Path(gr.utils.get_upload_folder()) / "sessions"


def privacy_note() -> str:
    idle = f"{IDLE_MINUTES:g} minute{'s' if IDLE_MINUTES != 1 else ''}"
    return (
        "**What this demo keeps, where, and for how long.** A photo or adapter file you upload is read into this "
        "session's memory, and the uploaded file is deleted from the server as soon as it has been read. The images "
        "on this page (the face found, your crop, its inversion, the previews, the grids) and the adapter you can "
        "download are written to a "
        f"folder of this session under `{session_root()}` on the server, only to serve them to your browser. That "
        "folder and everything the session holds in memory are deleted when you close the tab (within seconds), "
        f"when you press **End session**, or after {idle} without activity. Any other file that the web "
        f"framework caches is deleted at most {CACHE_MINUTES + 1} minutes after it was written, and the whole cache "
        "is emptied when the server starts. Nothing about your images is logged, and nothing is kept after the "
        "session."
    )


NOTE = (
    "**About this demo.** The embedded default model is a *synthetic face world*: a small generator (64×64) "
    "trained on procedurally drawn faces, with its own identity networks, running offline on a CPU. Real photos "
    "are accepted and go through the same pipeline, but their inversion can only be the nearest face-world face; "
    "forgetting real people needs a real-model backend (a photo-realistic generator and face-recognition "
    "network)."
)

NOTE_PHOTO_MODEL = (
    "**About this demo.** It runs a real-model backend (named above): uploads are embedded or inverted by that "
    "model, and the forgetting curve is scored by the insightface judge (no curve without an insightface pack). "
    "The \"retained\" column shows random identities from the model's own prior."
)

FACE_WORLD_LIKENESS = ("The embedded model only draws face-world faces: a real photo becomes its nearest "
                       "face-world likeness.")

INTRO = (
    "# legato: continuous identity unlearning\n"
    "Small Neural-ODE adapters make a frozen face generator forget one identity, and a single training run gives "
    "every degree of forgetting in between. The **forgetting** slider goes from **0, exactly the original model**, "
    "to **1, the person fully forgotten**. After training, each adapter's slider is calibrated so that equal steps "
    "take equal steps away from the person. "
    "The checkbox **advanced: raw ODE time t** under the slider shows the adapter's own knob instead, the ODE's "
    "integration time t from 0 to T = 1.6 (the paper's view), where equal steps can change the face very "
    "unevenly.\n\n"
    "1. Drop a face, or pick a face-world identity. 2. Press **Forget**. 3. Move the **forgetting** slider. "
    "4. Press **Try to bring them back**: an attacker inverts the person's photo into the model and shows what "
    "comes out. Tick **Robust** before Forget so that this does not bring them back."
)

U_LABEL = ("forgetting: 0 = the original model, 1 = fully forgotten; equal steps take equal steps away from the "
           "person")
T_LABEL = ("raw ODE time t (the paper's knob): 0 = the original model, T = the end time the adapter was trained to; "
           "equal steps of t can change the face very unevenly")

MODEL_NOTE = (
    "What the model this session would deploy draws: the base model with **every forgotten identity's adapter "
    "applied at once**, each at its own forgetting setting (its request), above the original model's drawing of "
    "the same person. Below them, a few people nobody asked to forget: each adapter acts only near its own "
    "person, so they should be drawn as before. Removing a request gives exactly the model without it. A session "
    f"holds up to {MAX_IDENTITIES} identities."
)

EXPIRED = ("This session ended after {minutes} without activity, and everything it held was deleted. "
           "Reload the page to start again.")

# a tiny plot template: the stock ones add ~8 kB of JSON to every figure sent to the page
TEMPLATE = go.layout.Template(layout={"paper_bgcolor": "white", "plot_bgcolor": "white", "font": {"size": 12},
                                      "xaxis": {"gridcolor": "#eee", "zerolinecolor": "#ddd"},
                                      "yaxis": {"gridcolor": "#eee", "zerolinecolor": "#ddd"}})

STUDIO_OPTIONS: dict = {}  # extra Studio(...) arguments for new sessions (e.g. curve_views, default_config)
SESSIONS: dict[str, Studio] = {}  # session hash -> Studio, so that closing a tab can cancel its job
_SESSIONS_LOCK = threading.Lock()


# -- small view helpers ----------------------------------------------------------------------------------------
def _big(im: Image.Image) -> Image.Image:
    return im.resize((SHOW, SHOW), Image.BICUBIC)


def _example_gallery() -> list[Image.Image]:
    imgs = faceworld.render(list(EXAMPLE_IDS), 0)
    return [to_pil(img).resize((128, 128), Image.BICUBIC) for img in imgs]


def loss_figure(losses: list[dict], steps: int) -> go.Figure:
    fig = go.Figure()
    x = [r["step"] for r in losses]
    for name, label in (("total", "total"), ("local", "local (forget)"), ("preservation", "preservation"),
                        ("trajectory", "trajectory")):
        fig.add_scatter(x=x, y=[r[name] for r in losses], mode="lines", name=label)
    fig.update_layout(height=300, margin={"l": 50, "r": 10, "t": 40, "b": 90}, template=TEMPLATE,
                      title={"text": "training losses", "x": 0.02, "y": 0.97},
                      xaxis={"title": "step", "range": [0, max(steps, 1)]}, yaxis={"title": "loss"},
                      legend={"orientation": "h", "y": -0.35, "yanchor": "top", "x": 0})
    return fig


def curve_figure(curve: dict | None) -> go.Figure | None:
    """The forgetting curve over the slider's position u (``Studio.curve``), each tick also naming the ODE time t
    it stands for, with a marker where the slider is."""
    if curve is None:
        return None
    us, ts = curve["u"], curve["t"]
    u, t = float(curve["current_u"]), float(curve["current_t"])
    where = [f"u = {a:.2f} (t = {b:.2f})" for a, b in zip(us, ts, strict=True)]
    fig = go.Figure()
    ys = list(curve["retention"])
    if curve["id_target"] is not None:
        ys += curve["id_target"]
        fig.add_scatter(x=us, y=curve["id_target"], mode="lines+markers", name=f"ID_target: {curve['name']}",
                        line={"color": "#c0392b"}, text=where, hovertemplate="%{text}<br>%{y:.3f}")
    fig.add_scatter(x=us, y=curve["retention"], mode="lines+markers", name="retention: other identities",
                    line={"color": "#27ae60"}, text=where, hovertemplate="%{text}<br>%{y:.3f}")
    fig.add_hline(y=curve["threshold"], line_dash="dash", line_color="#555",
                  annotation_text="judge threshold (above: same person)", annotation_position="bottom left")
    marks = [("retention", "#27ae60")] + ([("id_target", "#c0392b")] if curve["id_target"] is not None else [])
    for key, color in marks:
        fig.add_scatter(x=[u], y=[float(np.interp(u, us, curve[key]))], mode="markers", showlegend=False,
                        marker={"size": 14, "color": color, "line": {"width": 2, "color": "black"}},
                        hovertemplate=f"u = {u:.2f} (t = {t:.2f})<br>%{{y:.3f}}<extra></extra>")
    fig.add_vline(x=u, line_color="#888", line_width=1)
    lo = min(min(ys), curve["threshold"]) - 0.1
    every = max(1, (len(us) - 1) // 4)  # two-line ticks at u = 0, 0.25, ..., 1; the hover text names every point
    ticks = {"tickmode": "array", "tickvals": us[::every],
             "ticktext": [f"{a:g}<br>t {b:.2f}" for a, b in zip(us[::every], ts[::every], strict=True)]}
    dial = "calibrated dial" if curve.get("dial") else "no calibrated dial: u = t / T"
    fig.update_layout(height=380, margin={"l": 50, "r": 10, "t": 70, "b": 70}, template=TEMPLATE,
                      title={"text": f"forgetting curve (scored by the judge network; {dial})", "x": 0.02, "y": 0.97},
                      xaxis={"title": {"text": "forgetting u (the slider), with the ODE time t it stands for",
                                       "standoff": 4}, "range": [-0.03, 1.03], **ticks},
                      yaxis={"title": "judge cosine to the original", "range": [lo, 1.05]},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
    return fig


# -- session plumbing --------------------------------------------------------------------------------------------
def _error(message: str, title: str) -> gr.Error:
    """A message for the person, led by ``title`` (what failed: gradio 6.31's toast heads every error "Error"
    whatever its title); a refused request is not a server fault, so no traceback goes to the log."""
    if not message.startswith(("t ", "u ")):  # "t must be ..." keeps the name of the knob as it is
        message = message[:1].upper() + message[1:]
    message = message if message.endswith((".", "?", "!")) else message + "."
    return gr.Error(f"{title}. {message}", title=title, print_exception=False)


def _idle_words() -> str:
    return f"{IDLE_MINUTES:g} minute{'s' if IDLE_MINUTES != 1 else ''}"


def _session(studio: Studio | None, request: gr.Request | None, new_ok: bool = True) -> Studio:
    """This browser session's Studio (made on first use). ``new_ok``: whether a session that ended for idleness
    may silently start afresh (adding a face) or must say so (everything else refers to what it held)."""
    sid = getattr(request, "session_hash", None)
    with _SESSIONS_LOCK:
        if (studio is None or studio.closed) and sid is not None:
            live = SESSIONS.get(sid)  # a handler that failed before returning its state
            if live is not None and not live.closed:
                studio = live
        if studio is not None and studio.closed and studio.closed_reason == "idle" and not new_ok:
            raise _error(EXPIRED.format(minutes=_idle_words()), "Idle timeout")
        if studio is None or studio.closed:
            studio = Studio(**{"default_config": ForgetConfig(steps=DEFAULT_STEPS), "session_root": session_root(),
                               **STUDIO_OPTIONS})
        if sid is not None:
            SESSIONS[sid] = studio
    studio.touch()
    _start_reaper()
    return studio


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def release_memory() -> None:
    """After a session ends: collect its garbage and hand freed heap pages back to the system (glibc keeps them
    otherwise, and the server's resident memory grows by a training run's worth per session; see docs/soak.md)."""
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None and os.environ.get("LEGATO_MALLOC_TRIM", "1") != "0":  # "0": off, to measure without it
        trim(0)


def _end(studio: Studio | None, reason: str) -> None:
    if studio is not None and not studio.closed:
        studio.close(reason)
        threading.Thread(target=release_memory, daemon=True, name="legato-release").start()


def _close_state(studio: Studio | None) -> None:
    _end(studio, "closed")


def on_unload(request: gr.Request) -> None:
    with _SESSIONS_LOCK:
        studio = SESSIONS.pop(request.session_hash, None)
    _end(studio, "closed")


def close_sessions() -> None:
    """Cancel every session's job and delete its files (server shutdown, tests)."""
    with _SESSIONS_LOCK:
        studios = list(SESSIONS.values())
        SESSIONS.clear()
    for studio in studios:
        studio.close("server stopped")


def reap_sessions(idle_seconds: float | None = None) -> list[str]:
    """End every session idle for longer than ``idle_seconds`` (default ``IDLE_MINUTES``), forget closed ones, keep
    the live sessions' files fresh for gradio's cache sweep, and delete session folders nobody owns. Returns the
    session hashes ended here."""
    limit = IDLE_MINUTES * 60 if idle_seconds is None else idle_seconds
    ended = []
    with _SESSIONS_LOCK:
        items = list(SESSIONS.items())
    for sid, studio in items:
        if not studio.closed and studio.idle_seconds > limit:
            _end(studio, "idle")
            ended.append(sid)
        if studio.closed:
            with _SESSIONS_LOCK:
                if SESSIONS.get(sid) is studio:
                    del SESSIONS[sid]
            continue
        for path in studio.files():  # gradio deletes cached files by age: a live session's must not age
            try:
                os.utime(path)
            except OSError:
                pass
    _sweep_folders()
    return ended


def _sweep_folders(min_age: float = 60.0) -> None:
    """Delete session folders of this server that no live session owns (older than ``min_age`` s, so that a folder
    being made is never taken), the caches of servers that no longer run, and cut-off uploads."""
    root = session_root()
    with _SESSIONS_LOCK:
        live = {s.folder for s in SESSIONS.values() if s.folder is not None}
    if root.exists():
        for folder in root.iterdir():
            try:
                if folder not in live and time.time() - folder.stat().st_mtime > min_age:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass
    remove_stopped_servers(root.parent.parent)
    # an upload cut off half way leaves gradio's temporary file (tmpXXXX) in the cache's top folder, in no list of
    # gradio's own: it goes after the same CACHE_MINUTES as everything else gradio caches
    for partial in root.parent.glob("tmp*"):
        try:
            if partial.is_file() and time.time() - partial.stat().st_mtime > CACHE_MINUTES * 60:
                partial.unlink()
        except OSError:
            pass


_REAPER: threading.Thread | None = None


def _start_reaper() -> None:
    global _REAPER
    with _SESSIONS_LOCK:
        if _REAPER is not None and _REAPER.is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(REAP_SECONDS)
                try:
                    reap_sessions()
                except Exception as e:  # never let the sweeper die; say what happened, without personal data
                    print(f"legato demo: session sweep failed: {type(e).__name__}")

        _REAPER = threading.Thread(target=loop, daemon=True, name="legato-reaper")
        _REAPER.start()


def _is_upload(path: str) -> bool:
    """Whether ``path`` is an upload in gradio's cache, not a file of a session (an API client may name any
    cached file: a session's own face must never be read, or deleted, as someone's upload)."""
    try:
        p = Path(path).resolve()
        return p.is_relative_to(Path(gr.utils.get_upload_folder()).resolve()) and \
            not p.is_relative_to(session_root().resolve())
    except (OSError, ValueError):
        return False


def _forget_upload(path: str | None) -> None:
    """Delete an uploaded file (and its folder, if now empty) once it has been read: gradio would keep it."""
    if not path or not _is_upload(path):
        return
    p = Path(path)
    try:
        p.unlink(missing_ok=True)
        p.parent.rmdir()
    except OSError:
        pass


def _number(value, what: str, lo: float, hi: float, whole: bool = False, title: str = "Value refused") -> float:
    """An API or UI value checked as a number in [lo, hi] (a whole one if ``whole``), or a clear error."""
    kind = "a whole number" if whole else "a number"
    try:
        if isinstance(value, bool) or value is None:
            raise TypeError
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _error(f"{what} must be {kind} from {lo:g} to {hi:g}; got {value!r}", title) from None
    if not math.isfinite(x) or not lo <= x <= hi or (whole and not x.is_integer()):
        raise _error(f"{what} must be {kind} from {lo:g} to {hi:g}; got {value!r}", title)
    return int(x) if whole else x


def _key(value) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _error(f"an identity is named by its key, a string such as '1'; got {value!r}", "Unknown identity")
    return value


IDENTITY_API = {"type": "string", "description": "an identity's key, a string such as '1'",
                "additional_description": "an identity's key, a string such as '1': the value of the Identity list, "
                                          "returned first by /add_image, /add_identity and /import_adapter"}


def _document_identity(dropdown: gr.Dropdown) -> None:
    """The API page types a dropdown by its choices, which start empty ("Literal[]"): say what the key is instead."""
    dropdown.api_info = lambda: dict(IDENTITY_API)


NOT_A_FILE = "\0not a file: "  # an upload's name when the API sent something else (see ``_files_only``)
FILE_META = {"_type": "gradio.FileData"}  # what marks a payload as a file (gradio checks only those are uploads)


def _files_only(component: gr.components.Component) -> None:
    """Gradio checks an upload's payload before the handler runs, and a bare string (``add_image('not-a-path')``)
    fails there with a traceback in the log and a bare "Error" for the client: it is let through, marked, and
    the handler refuses it with a message (pydantic turns an error raised here into a traceback)."""
    base = component.data_model
    component.api_info()  # the API page keeps gradio's own description of the payload

    class FilePayload(base):
        @pydantic.model_validator(mode="before")
        @classmethod
        def _mark_not_a_file(cls, value):
            if isinstance(value, base) or (isinstance(value, dict) and value.get("meta") == FILE_META):
                return value
            return {"path": "", "orig_name": f"{NOT_A_FILE}{value!r:.80}", "meta": FILE_META}

    FilePayload.__name__ = FilePayload.__qualname__ = base.__name__
    component.data_model = FilePayload


def _path(payload, what: str) -> str | None:
    """The server-side path of an upload received with ``preprocess=False`` (a FileData dict); ``what`` names the
    file expected, for the message when the API sent something else."""
    if payload is None:
        return None
    name = payload.get("orig_name") if isinstance(payload, dict) else None
    if isinstance(name, str) and name.startswith(NOT_A_FILE):
        raise _error(f"{what} is sent as a file, with gradio_client.handle_file(path); got {name[len(NOT_A_FILE):]}",
                     "Upload refused")
    if isinstance(payload, dict):
        return payload.get("path")
    return getattr(payload, "path", None) or str(payload)


# -- the app -----------------------------------------------------------------------------------------------------
def _entry_for(studio: Studio, key) -> Entry:
    """The session's entry for a dropdown value, or the page's error message."""
    try:
        return studio.get(_key(key))
    except StudioError as e:
        raise _error(str(e), "Unknown identity") from e


def _parts(ns: SimpleNamespace, names: str) -> tuple:
    """``ns``'s attributes named in ``names`` (space-separated), in that order: a section's components."""
    return tuple(getattr(ns, n) for n in names.split())


def _layout(default_steps: int, backend_label: str, face_world: bool) -> SimpleNamespace:
    """The page's components, top to bottom (inside the Blocks being built); returned by name for the sections."""
    state = gr.State(None, delete_callback=_close_state)
    gr.Markdown(INTRO, elem_id="intro")
    gr.Markdown(f"**Backend:** {backend_label}", elem_id="backend")
    gr.Markdown("## 1 · Add a face")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            upload = gr.Image(label="Drop a face image", type="filepath", sources=["upload"],
                              image_mode=None, height=200, elem_id="face_upload")
            _files_only(upload)
            with gr.Row(visible=False) as face_row:  # face handling: the box found and the crop used
                face_found = gr.Image(label="face found", interactive=False, height=120, elem_id="face_found",
                                      buttons=[])
                face_used = gr.Image(label="crop used", interactive=False, height=120, elem_id="face_crop",
                                     buttons=[])
            face_note = gr.Markdown("", elem_id="face_note")
        with gr.Column(scale=3, min_width=400, visible=face_world):
            gr.Markdown(f"**…or pick a face-world identity** (ids {EXAMPLE_IDS[0]}–{EXAMPLE_IDS[-1]}, "
                        "held out from every training set)")
            gallery = gr.Gallery(value=_example_gallery(), show_label=False, columns=len(EXAMPLE_IDS), height=125,
                                 allow_preview=False, interactive=False, elem_id="examples")
            with gr.Accordion("Add a face-world identity by id", open=False):
                with gr.Row():
                    face_id = gr.Number(value=200_010, precision=None, label="face-world id",
                                        info=f"a whole number from {MIN_FACE_ID:,} to {MAX_FACE_ID:,}: lower "
                                             "ids are the networks' training and tuning ranges",
                                        elem_id="face_id")
                    add_id = gr.Button("Add", elem_id="add_id_btn", scale=0)
    with gr.Row():
        with gr.Column(scale=4):
            gr.Markdown((NOTE if face_world else NOTE_PHOTO_MODEL) + "\n\n" + privacy_note(), elem_id="note")
        with gr.Column(scale=1, min_width=200):
            end_btn = gr.Button("End session (delete everything now)", variant="secondary", size="sm",
                                elem_id="end_btn")
    gr.Markdown("## 2 · Forget it")
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            identity = gr.Dropdown(choices=[], value=None, label="Identity (the slider controls this one)",
                                   interactive=True, elem_id="identity")
            _document_identity(identity)
            remove_btn = gr.Button("Remove identity", size="sm", elem_id="remove_btn")
            with gr.Row():
                source = gr.Image(label="your face", interactive=False, height=SHOW,
                                  elem_id="source_image", buttons=[])
                inversion = gr.Image(label="its inversion", interactive=False, height=SHOW,
                                     elem_id="inversion_image", buttons=[])
        with gr.Column(scale=1, min_width=320):
            steps = gr.Slider(1, MAX_STEPS, value=default_steps, step=1, label="training steps",
                              info=f"{ForgetConfig().steps} is the default; fewer is faster and forgets less",
                              elem_id="steps")
            robust = gr.Checkbox(False, label="Robust: forget every face the model draws as this person, so that "
                                              "re-inverting their photo does not bring them back",
                                 elem_id="robust")
            with gr.Row():
                forget_btn = gr.Button("Forget", variant="primary", elem_id="forget_btn")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel_btn")
            status = gr.Textbox(label="status", interactive=False, lines=2, elem_id="status",
                                value="Add a face to begin.")
            preview = gr.Image(label="at t = T while training", interactive=False, height=150,
                               elem_id="preview", buttons=[])
        with gr.Column(scale=1, min_width=320):
            loss_plot = gr.Plot(label="training losses", show_label=False, elem_id="loss_plot")
    gr.Markdown("## 3 · Dial the forgetting")
    # one slider shows at a time: u (what a person moves) or, with the advanced box, raw t; each has its own
    # events and API names (/render_u, /curve_u for u; /render, /curve for t, as before)
    u_slider = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label=U_LABEL, interactive=False, elem_id="u_slider")
    t_slider = gr.Slider(0.0, 1.6, value=0.0, step=0.05, label=T_LABEL, interactive=False, visible=False,
                         elem_id="t_slider")
    raw_t = gr.Checkbox(False, label="advanced: raw ODE time t (the paper's view)", elem_id="raw_t")
    compose = gr.Checkbox(False, label="Compose: also apply this session's other forgotten identities in the "
                                       "bottom row, each at its own setting (off: the bottom row is the selected "
                                       "identity's adapter alone, so 0 is exactly the original)",
                          elem_id="compose")
    grid = gr.Image(label="top: original model (t = 0) · bottom: at the slider's setting", show_label=False,
                    format="jpeg", interactive=False, elem_id="grid", buttons=["download"])
    composition = gr.Markdown("", elem_id="composition")
    with gr.Row():
        with gr.Column(scale=3):
            curve = gr.Plot(label="forgetting curve", show_label=False, elem_id="curve")
        with gr.Column(scale=2):
            gr.Markdown("### Adapters\nDownload the selected identity's adapter (a small .safetensors file), "
                        "or upload one to restore it. Adapters only load onto the base model they were "
                        "trained for.")
            download = gr.DownloadButton("Download adapter (.safetensors)", value=None, interactive=False,
                                         elem_id="download_btn")
            adapter_upload = gr.File(label="Restore an adapter (.safetensors)", file_types=[".safetensors"],
                                     height=120, elem_id="adapter_upload")
            _files_only(adapter_upload)
    gr.Markdown("### Does forgetting hold?\nAn attacker with the person's photo inverts it into the model as the "
                "slider sets it (200 steps of the model's own inversion) and shows what comes out; the judge, a "
                "network that trained nothing here, says whether it is the person again.")
    with gr.Row():
        with gr.Column(scale=1, min_width=200):
            attack_btn = gr.Button("Try to bring them back", elem_id="attack_btn")
        with gr.Column(scale=2):
            attack_image = gr.Image(label="their photo · what the attacker got", interactive=False, height=220,
                                    elem_id="attack_image", buttons=[])
        with gr.Column(scale=2):
            attack_text = gr.Markdown("", elem_id="attack_text")
    gr.Markdown("## 4 · The model: everyone forgotten in this session, at once")
    model_note = gr.Markdown(MODEL_NOTE, elem_id="model_note")
    model_grid = gr.Image(label="the model: every request applied", show_label=False, format="jpeg",
                          interactive=False, elem_id="model_view", buttons=["download"])
    requests_table = gr.Dataframe(value={"headers": REQUEST_COLUMNS, "data": []}, headers=REQUEST_COLUMNS,
                                  label="requests (this session's identities, in the order they were added)",
                                  interactive=False, wrap=True, max_height=800, elem_id="requests")
    with gr.Row():
        request_pick = gr.Dropdown(choices=[], value=None, label="Request to remove (or click its row)",
                                   interactive=True, scale=3, elem_id="request_pick")
        _document_identity(request_pick)
        remove_request_btn = gr.Button("Remove request", variant="stop", scale=1, elem_id="remove_request_btn")
    timer = gr.Timer(0.5, active=False)
    watch = gr.Timer(WATCH_SECONDS, active=True)  # says so when the session ends for idleness

    # the first ten in their old order (API clients read outputs by index); then the u slider and the toggle, then
    # the panels of the selected identity's training run and face handling
    entry_outputs = [state, identity, source, inversion, t_slider, grid, curve, status, download, composition,
                     u_slider, raw_t, loss_plot, preview, face_row, face_found, face_used, face_note]
    model_outputs = [model_grid, requests_table, request_pick]
    named = (gr.components.Component, gr.blocks.BlockContext, list)
    return SimpleNamespace(**{k: v for k, v in locals().items() if isinstance(v, named)})


def _views(page: SimpleNamespace) -> SimpleNamespace:
    """What the page shows for an entry (every panel: the selected identity's, or nothing), an empty session and a
    training run's progress (shared by sections)."""
    (composition, curve, download, face_found, face_note, face_row, face_used, grid, identity, inversion, loss_plot,
     preview, raw_t, source, state, status, t_slider, u_slider, upload) = _parts(
        page, "composition curve download face_found face_note face_row face_used grid identity inversion loss_plot "
        "preview raw_t source state status t_slider u_slider upload")

    def grid_view(studio: Studio, key: str | None, t: float | None = None,
                  u: float | None = None) -> tuple[str, str, float, float]:
        """(grid file, composition text, u, t), made together (``Studio.view``)."""
        im, text, u, t = studio.view(key, t, u=u)
        return str(studio.publish(im, "grid", "jpeg")), text, u, t

    def sliders(raw: bool, entry: Entry | None = None, u: float = 0.0, t: float = 0.0) -> dict:
        """The two sliders (one shown: u, or raw t in the advanced view) and the toggle, at one stored setting."""
        ready = entry is not None and entry.ready
        t_max = entry.t_max if entry is not None else 1.6
        return {u_slider: gr.Slider(value=round(u, 4), interactive=ready, visible=not raw,
                                    info=dial_note(entry.adapter if entry is not None else None) or None),
                t_slider: gr.Slider(maximum=t_max, value=round(t, 4), interactive=ready, visible=raw),
                raw_t: raw}

    def run_view(studio: Studio, key: str, force: bool = False) -> dict:
        """The loss plot and the "at t = T" preview of identity ``key``'s training run (None: it has none); only
        what changed since the page last got them, unless ``force``."""
        run = studio.run_of(key)
        ui = studio.ui  # what this session's page already shows
        shown = (key, run.step if run is not None else None, len(run.losses) if run is not None else 0)
        out = {}
        if force or ui.get("losses") != shown:
            out[loss_plot] = loss_figure(run.losses, run.steps) if run is not None and run.steps else None
            ui["losses"] = shown
        picture = run.preview if run is not None else None
        if force or ui.get("preview") is not picture or ui.get("preview_key") != key:
            out[preview] = (str(studio.publish(_big(to_pil(picture)), f"preview-{key}")) if picture is not None
                            else None)
            ui["preview"], ui["preview_key"] = picture, key
        return out

    def face_view(studio: Studio, entry: Entry) -> dict:
        """What face handling did with the identity's upload: the box found, the crop used and one line about it
        (the files live in the session's folder, so they go with the identity or the session)."""
        face = entry.face
        if face is None:  # a face-world identity added by id, or a restored adapter: nothing was detected
            return {face_row: gr.Row(visible=False), face_found: None, face_used: None, face_note: ""}
        lines = [face.message] if face.message else []
        if face.aligned and studio.res.face_world:
            lines.append(FACE_WORLD_LIKENESS)
        found = (str(studio.entry_image(entry, "face-found", entry.face_preview)) if entry.face_preview is not None
                 else None)
        return {face_row: gr.Row(visible=True), face_found: found,
                face_used: str(studio.entry_image(entry, "source", _big(entry.source))), face_note: " ".join(lines)}

    def entry_view(studio: Studio, entry, text: str | None = None) -> dict:
        grid_path, composed, u, t = grid_view(studio, entry.key)
        return {
            state: studio,
            identity: gr.Dropdown(choices=[(e.label, e.key) for e in studio.entries.values()], value=entry.key),
            source: str(studio.entry_image(entry, "source", _big(entry.source))),
            inversion: str(studio.entry_image(entry, "inversion", _big(entry.inversion))),
            **sliders(studio.raw_t, entry, u, t),
            grid: grid_path,
            curve: curve_figure(studio.curve(entry.key)),
            download: gr.DownloadButton(value=str(studio.export_adapter(entry.key)) if entry.ready else None,
                                        interactive=entry.ready),
            composition: composed,
            status: text if text is not None else studio.status_text(entry.key),
            **run_view(studio, entry.key, force=True),
            **face_view(studio, entry),
        }

    def empty_view(studio: Studio | None, text: str) -> dict:
        if studio is not None:
            studio.ui.clear()
        return {state: studio, identity: gr.Dropdown(choices=[], value=None), source: None, inversion: None,
                **sliders(studio is not None and studio.raw_t), grid: None, curve: None,
                status: text, download: gr.DownloadButton(value=None, interactive=False), composition: "",
                loss_plot: None, preview: None, face_row: gr.Row(visible=False), face_found: None, face_used: None,
                face_note: ""}

    def added(studio: Studio, entry) -> dict:
        text = (f"Added {entry.name}. Press Forget to train its adapter." if not studio.busy
                else f"Added {entry.name}. It can be forgotten when the running job ends.")
        for note in entry.notes:
            text += f" Note: {note}."
            gr.Info(f"{entry.name}: {note}.")
        return {**entry_view(studio, entry, text), upload: None}

    model_grid, request_pick, requests_table = _parts(page, "model_grid request_pick requests_table")

    def model_view(studio: Studio | None, pick=None) -> dict:
        """The model section (the model view, the table of requests, the remove list) when it changed since the
        page last got it (else skips: the timer's ticks cost nothing); ``pick``: the request chosen to remove."""
        unchanged = {model_grid: gr.skip(), requests_table: gr.skip(), request_pick: gr.skip()}
        if studio is None or studio.closed or not studio.entries:
            if studio is not None and studio.ui.get("model") == "empty":
                return unchanged
            if studio is not None:
                studio.ui["model"] = "empty"
            return {model_grid: None, requests_table: {"headers": REQUEST_COLUMNS, "data": []},
                    request_pick: gr.Dropdown(choices=[], value=None)}
        rows = studio.requests()
        table, signature = table_rows(rows), studio.model_signature()
        shown = studio.ui.get("model")
        if shown is not None and shown != "empty" and shown == (table, signature):
            return unchanged
        out = {**unchanged, requests_table: {"headers": REQUEST_COLUMNS, "data": table},
               request_pick: gr.Dropdown(choices=[(f"{r['key']} · {r['name']}", r["key"]) for r in rows],
                                         value=pick if pick in studio.entries else None)}
        if shown is None or shown == "empty" or shown[1] != signature:
            out[model_grid] = str(studio.publish(studio.model_view(), "model", "jpeg"))
        studio.ui["model"] = (table, signature)
        return out

    def on_model(studio, pick):
        return model_view(studio, pick)

    def then_model(event) -> None:
        """After ``event`` succeeds, the model section follows (only what changed is sent)."""
        event.success(on_model, [page.state, request_pick], page.model_outputs, api_visibility="private",
                      preprocess=False, show_progress="hidden", concurrency_limit=None)

    return SimpleNamespace(grid_view=grid_view, entry_view=entry_view, empty_view=empty_view, added=added,
                           run_view=run_view, sliders=sliders, model_view=model_view, then_model=then_model)


def _wire_adding(page: SimpleNamespace, views: SimpleNamespace) -> None:
    """Adding faces (upload, examples, by id), choosing, removing, ending the session."""
    (add_id, compose, end_btn, entry_outputs, face_id, gallery, identity, remove_btn, state, timer, upload,
     watch) = _parts(page, "add_id compose end_btn entry_outputs face_id gallery identity remove_btn state timer "
                     "upload watch")
    added, empty_view, entry_view, then_model = _parts(views, "added empty_view entry_view then_model")

    def on_upload(payload, studio, request: gr.Request):
        """Add a face from an image file (PNG, JPEG or WebP; send it with gradio_client.handle_file(path)). Returns
        the page's panels: first the Identity list, whose value is the new identity's key (a string such as '1')."""
        path = _path(payload, "a face image")
        if not path or not _is_upload(path):
            raise _error("no file arrived; drop a face image (PNG, JPEG or WebP)", "Upload refused")
        try:
            studio = _session(studio, request)
            name = payload.get("orig_name") if isinstance(payload, dict) else None
            try:
                entry = studio.add_image(path, name=name or None)
            except ImageError as e:
                raise _error(f"Cannot use this file: {e}", "Upload refused") from e
            except StudioError as e:
                raise _error(str(e), "Upload refused") from e
        finally:
            _forget_upload(path)  # read into memory (or refused): the file itself is not kept
        return added(studio, entry)

    def on_add_id(face, studio, request: gr.Request):
        """Add a face-world identity by id, a whole number from 200,000 to 999,999,999. Returns the page's panels:
        first the Identity list, whose value is the new identity's key (a string such as '1')."""
        studio = _session(studio, request)
        try:
            entry = studio.add_identity(face)
        except StudioError as e:
            raise _error(str(e), "Id refused") from e
        return added(studio, entry)

    def on_example(studio, evt: gr.SelectData, request: gr.Request):
        return on_add_id(EXAMPLE_IDS[evt.index], studio, request)

    # show_progress_on: the spinner, and on failure gradio's "Error" badge, stay on the input that was used
    # (by default every output would be replaced by an "Error" badge next to the toast); a refused file is
    # cleared from the upload box by the .failure() step
    uploaded = upload.upload(on_upload, [upload, state], [*entry_outputs, upload], preprocess=False,
                             api_name="add_image", show_progress_on=upload, concurrency_limit=2,
                             concurrency_id="invert")
    uploaded.failure(lambda: None, None, upload, api_visibility="private", show_progress="hidden")
    then_model(uploaded)
    # preprocess=False: the id arrives as sent (no rounding of 3.7 to 4) and Studio.face_id checks it
    then_model(add_id.click(on_add_id, [face_id, state], [*entry_outputs, upload], api_name="add_identity",
                            preprocess=False, show_progress_on=face_id, concurrency_limit=2, concurrency_id="invert"))
    then_model(gallery.select(on_example, [state], [*entry_outputs, upload], api_visibility="private",
                              show_progress_on=gallery, concurrency_limit=2, concurrency_id="invert"))

    # inputs below are checked by the handlers (preprocess=False): a bad API value gets a clear message, and
    # gradio's own checks (which log a traceback) never run
    def on_select(key, studio, request: gr.Request):
        """Show identity ``key`` (a string such as '1'): every panel follows it."""
        studio = _session(studio, request, new_ok=False)
        entry = _entry_for(studio, key)
        if entry.ready:
            studio.prefill(entry.key)
        return entry_view(studio, entry)

    identity.input(on_select, [identity, state], entry_outputs, api_name="select", show_progress_on=identity,
                   preprocess=False, concurrency_limit=4, concurrency_id="render")

    def on_remove(key, studio, request: gr.Request):
        """Remove identity ``key`` (a string such as '1') with its adapter and its files."""
        studio = _session(studio, request, new_ok=False)
        try:
            gone = studio.remove(_key(key))
        except StudioError as e:
            raise _error(str(e), "Cannot remove") from e
        text = f"Removed {gone.name}: its adapter and its files are deleted."
        if not studio.entries:
            return empty_view(studio, text + " Add a face to begin.")
        entry = studio.get()
        if entry.ready:
            studio.prefill(entry.key)
        return entry_view(studio, entry, text)

    then_model(remove_btn.click(on_remove, [identity, state], entry_outputs, api_name="remove",
                                preprocess=False, show_progress_on=identity, concurrency_limit=4,
                                concurrency_id="render"))

    def on_end(studio, request: gr.Request):
        """End this session now: every identity, adapter and file of it is deleted."""
        sid = getattr(request, "session_hash", None)
        with _SESSIONS_LOCK:
            live = SESSIONS.pop(sid, None) if sid is not None else None
        for s in {id(x): x for x in (studio, live) if x is not None}.values():
            _end(s, "ended")
        return {**empty_view(None, "Session ended: everything it held was deleted. Add a face to start again."),
                timer: gr.Timer(active=False), compose: False}

    then_model(end_btn.click(on_end, [state], [*entry_outputs, timer, compose], api_name="end_session",
                             concurrency_limit=None))

    def on_watch(studio):
        """Whether this session ended for idleness: said once, as it happens, with the page emptied (a page
        without a session, or a live one, is left as it is)."""
        if studio is None or studio.closed_reason != "idle" or studio.ui.get("told"):
            return {watch: gr.skip()}
        text = EXPIRED.format(minutes=_idle_words())
        gr.Warning(f"Idle timeout. {text}", duration=None, title="Idle timeout")
        out = {**empty_view(studio, text), timer: gr.Timer(active=False), watch: gr.Timer(active=False)}
        studio.ui["told"] = True
        return out

    then_model(watch.tick(on_watch, [state], [*entry_outputs, timer, watch], api_name="watch_session",
                          concurrency_limit=None, show_progress="hidden"))



def _wire_forgetting(page: SimpleNamespace, views: SimpleNamespace) -> None:
    """The forget job: start, poll its progress, cancel."""
    (cancel_btn, entry_outputs, forget_btn, identity, loss_plot, preview, state, status, steps, timer) = _parts(
        page, "cancel_btn entry_outputs forget_btn identity loss_plot preview state status steps timer")
    entry_view, run_view, then_model = _parts(views, "entry_view run_view then_model")

    def on_forget(key, n_steps, studio, request: gr.Request):
        """Start training identity ``key``'s adapter (``key``: a string such as '1'; ``n_steps``: a whole number from
        1 to 600). Returns at once: follow the job with /poll."""
        studio = _session(studio, request, new_ok=False)
        n_steps = _number(n_steps, "training steps", 1, MAX_STEPS, whole=True, title="Cannot forget")
        try:
            studio.start_forget(_key(key), steps=n_steps)
        except BusyError as e:
            gr.Warning(f"Only one job per session: {e}.", duration=6)
            return {state: studio, status: f"Only one job per session: {e}.", timer: gr.Timer(active=True)}
        except StudioError as e:
            raise _error(str(e), "Cannot forget") from e
        st = studio.status()
        studio.ui.update(losses=(st.key, 0, 0), preview=None, preview_key=st.key)  # what this answer shows
        return {state: studio, status: st.text(), timer: gr.Timer(active=True),
                loss_plot: loss_figure([], st.steps), preview: None}

    then_model(forget_btn.click(on_forget, [identity, steps, state], [state, status, timer, loss_plot, preview],
                                api_name="forget", preprocess=False, concurrency_limit=None))

    def on_poll(key, studio):
        """The session's job as it runs (``key``: the identity the page shows, a string such as '1'): the status
        line, and the loss plot and preview when the job is that identity's."""
        if studio is None or studio.closed or studio.status() is None:
            return {timer: gr.Timer(active=False)}
        # take the finished job first: a status read before it could still say "running" when the job ends
        # between the two reads, and the one-time "Done" line would be lost
        fin = studio.take_finished()
        st = fin if fin is not None else studio.status()
        shown = key if isinstance(key, str) and key in studio.entries else None
        out = {timer: gr.Timer(active=not st.done)}
        if fin is not None:  # a training run's garbage: give it back now, not when the session ends
            threading.Thread(target=release_memory, daemon=True, name="legato-release").start()
        if fin is not None and fin.state == "done" and fin.key in studio.entries:
            # the view stays on the identity the person is looking at; only its list and status change
            shown = shown or fin.key
            text = None
            if shown != fin.key:
                text = (f"{studio.status_text(shown)} {st.text()} "
                        f"(Select {studio.get(fin.key).label} to move its slider.)")
            out.update(entry_view(studio, studio.get(shown), text))
            return out
        if shown is None:
            out[status] = st.text()
            return out
        out[status] = studio.status_text(shown)
        out.update(run_view(studio, shown))
        return out

    then_model(timer.tick(on_poll, [identity, state], [*entry_outputs, timer], api_name="poll",
                          preprocess=False, concurrency_limit=None, show_progress="hidden"))

    def on_cancel(studio):
        """Cancel this session's running job."""
        if studio is None or not studio.cancel():
            gr.Info("Nothing is running.")
            return gr.skip()
        return "Cancelling…"

    then_model(cancel_btn.click(on_cancel, [state], [status], api_name="cancel", concurrency_limit=None))



def _wire_intensity(page: SimpleNamespace, views: SimpleNamespace) -> None:
    """The forgetting slider (position u), its advanced twin (raw ODE time t), the curve's marker and the
    composition switch. The slider's meaning lives in ``Studio`` (``set_u``, ``set_t``, ``raw_t``)."""
    (compose, composition, curve, grid, identity, raw_t, state, t_slider, u_slider) = _parts(
        page, "compose composition curve grid identity raw_t state t_slider u_slider")
    grid_view, sliders, then_model = _parts(views, "grid_view sliders then_model")

    def _setting(value, key, studio: Studio, raw: bool) -> tuple[Entry, dict]:
        """The identity and a slider's value checked as its new setting: {"t": raw t} or {"u": position}."""
        entry = _entry_for(studio, key)
        if raw:
            return entry, {"t": _number(value, "t", 0.0, round(entry.t_max, 6), title="Slider value refused")}
        return entry, {"u": _number(value, "u", 0.0, 1.0, title="Slider value refused")}

    def _render(value, key, studio, raw: bool):
        if studio is None or not studio.entries:
            return gr.skip(), gr.skip()
        entry, setting = _setting(value, key, studio, raw)
        studio.touch()
        grid_path, composed, _, _ = grid_view(studio, entry.key, **setting)
        return grid_path, composed

    def on_render(t, key, studio):
        """The grid with identity ``key``'s adapter at raw ODE time ``t`` in [0, t_max] (the advanced view); kept as
        the first slider position u that reaches t. Returns the grid image and the text under it."""
        return _render(t, key, studio, raw=True)

    def on_render_u(u, key, studio):
        """The grid with identity ``key``'s adapter at slider position ``u`` in [0, 1] (0: the original model,
        1: fully forgotten; the adapter's calibrated dial maps u to its ODE time t). Returns the grid image and the
        text under it."""
        return _render(u, key, studio, raw=False)

    for slider, fn, api_name in ((t_slider, on_render, "render"), (u_slider, on_render_u, "render_u")):
        slider.input(fn, [slider, identity, state], [grid, composition], trigger_mode="always_last",
                     preprocess=False, show_progress="hidden", api_name=api_name, concurrency_limit=4,
                     concurrency_id="render")

    def _curve(value, key, studio, raw: bool):
        if studio is None or not studio.entries:
            return gr.skip()
        entry, setting = _setting(value, key, studio, raw)
        studio.touch()
        if raw:
            studio.set_t(entry.key, setting["t"])
        else:
            studio.set_u(entry.key, setting["u"])
        return curve_figure(studio.curve(entry.key))

    def on_curve(t, key, studio):
        """Set identity ``key`` to raw ODE time ``t`` in [0, t_max] and return its forgetting curve with the
        marker there (the curve's x-axis is the slider position u)."""
        return _curve(t, key, studio, raw=True)

    def on_curve_u(u, key, studio):
        """Set identity ``key`` to slider position ``u`` in [0, 1] and return its forgetting curve with the marker
        there."""
        return _curve(u, key, studio, raw=False)

    # the curve's marker follows on release: redrawing the plot on every input costs the browser ~90 ms
    for slider, fn, api_name in ((t_slider, on_curve, "curve"), (u_slider, on_curve_u, "curve_u")):
        then_model(slider.release(fn, [slider, identity, state], curve, show_progress="hidden", preprocess=False,
                                  api_name=api_name, concurrency_limit=4))

    def on_raw_t(on, key, studio, request: gr.Request):
        """Show the slider as raw ODE time t (true: the paper's view) or as the position u (false). Every identity
        keeps its setting, so the render does not change: the slider shown takes it in its own terms."""
        if not isinstance(on, bool):
            raise _error(f"the raw-t switch is true or false; got {on!r}", "Switch refused")
        studio = _session(studio, request, new_ok=False)
        studio.set_raw_t(on)
        if not studio.entries:
            return {state: studio, **sliders(on)}
        entry = _entry_for(studio, key)
        if entry.ready:
            studio.prefill(entry.key)  # the positions of the slider now shown
        u = entry.u
        return {state: studio, **sliders(on, entry, u, entry.t_at(u))}

    raw_t.input(on_raw_t, [raw_t, identity, state], [state, u_slider, t_slider, raw_t], api_name="raw_t",
                preprocess=False, show_progress="hidden", concurrency_limit=4, concurrency_id="render")

    def on_compose(on, key, studio, request: gr.Request):
        """Apply this session's other forgotten identities in the bottom row too (``on``: true or false); ``key``:
        the identity shown, a string such as '1'."""
        if not isinstance(on, bool):
            raise _error(f"the compose switch is true or false; got {on!r}", "Switch refused")
        studio = _session(studio, request, new_ok=False)
        studio.set_compose(on)
        if not studio.entries:
            return {state: studio}
        entry = _entry_for(studio, key)
        if entry.ready:
            studio.prefill(entry.key)
        grid_path, composed, _, _ = grid_view(studio, entry.key)
        return {state: studio, grid: grid_path, composition: composed}

    compose.input(on_compose, [compose, identity, state], [state, grid, composition], api_name="compose",
                  preprocess=False, show_progress="hidden", concurrency_limit=4, concurrency_id="render")



def _wire_adapters(page: SimpleNamespace, views: SimpleNamespace) -> None:
    """Adapters out (download) and in (restore from a file)."""
    (adapter_upload, download, entry_outputs, identity, state, timer) = _parts(
        page, "adapter_upload download entry_outputs identity state timer")
    entry_view, then_model = _parts(views, "entry_view then_model")

    def on_export(key, studio):
        """The adapter file of identity ``key`` (a string such as '1'), once it is forgotten."""
        if studio is None or studio.closed:
            raise _error("nothing to download yet: forget an identity first", "Nothing to download")
        studio.touch()
        try:
            return str(studio.export_adapter(_key(key)))
        except StudioError as e:
            raise _error(str(e), "Nothing to download") from e

    # the button's file is set whenever a forgotten identity is shown; the click downloads it (and, through
    # the API, returns it)
    download.click(on_export, [identity, state], download, api_name="export_adapter", preprocess=False,
                   show_progress="hidden")

    def on_import(payload, studio, request: gr.Request):
        """Restore an adapter (.safetensors, sent with gradio_client.handle_file(path)) as a new identity."""
        path = _path(payload, "an adapter")
        if not path or not _is_upload(path):
            raise _error("no file arrived; upload an adapter .safetensors file", "Adapter refused")
        try:
            studio = _session(studio, request)
            try:
                entry = studio.import_adapter(path)
            except StudioError as e:
                raise _error(str(e), "Adapter refused") from e
        finally:
            _forget_upload(path)
        st = studio.status()
        return {**entry_view(studio, entry, st.text() if st else None), timer: gr.Timer(active=True),
                adapter_upload: None}

    imported = adapter_upload.upload(on_import, [adapter_upload, state], [*entry_outputs, timer, adapter_upload],
                                     preprocess=False, api_name="import_adapter", show_progress_on=adapter_upload)
    imported.failure(lambda: None, None, adapter_upload, api_visibility="private", show_progress="hidden")
    then_model(imported)



def _wire_attack(page: SimpleNamespace) -> None:
    """Robust mode's switch and the "Try to bring them back" button."""
    attack_btn, attack_image, attack_text, identity, robust, state = _parts(
        page, "attack_btn attack_image attack_text identity robust state")

    def on_robust(on, studio, request: gr.Request):
        """Forget in robust mode from now on in this session (``on``: true or false)."""
        if not isinstance(on, bool):
            raise _error(f"the robust switch is true or false; got {on!r}", "Switch refused")
        studio = _session(studio, request)
        studio.set_robust(on)
        return studio

    robust.input(on_robust, [robust, state], [state], api_name="robust", preprocess=False,
                 show_progress="hidden", concurrency_limit=None)

    def on_attack(key, studio, request: gr.Request):
        """Attack (a) on the model as the page shows it (``key``: the identity, a string such as '1'): the person's
        photo re-inverted into it, the attacker's best render and the judge's verdict."""
        studio = _session(studio, request, new_ok=False)
        try:
            out = studio.attack(_key(key))
        except StudioError as e:
            raise _error(str(e), "Cannot attack") from e
        verdict = ("**Forgetting held**: the judge does not see the person" if out["held"]
                   else "**Forgetting broke**: the judge sees the person again")
        text = (f"{verdict} (similarity {out['similarity']:.2f}; the same person from {out['threshold']:.2f}).\n\n"
                f"Attacked {out['name']} at slider {out['u']:.2f} (t = {out['t']:.2f}), {out['steps']} inversion "
                f"steps{', robust mode' if out['robust'] else ''}.")
        return {state: studio, attack_image: str(studio.publish(out["image"], "attack")), attack_text: text}

    attack_btn.click(on_attack, [identity, state], [state, attack_image, attack_text], api_name="attack",
                     preprocess=False, concurrency_limit=2)


def _wire_model(page: SimpleNamespace, views: SimpleNamespace) -> None:
    """The model section: remove a request from the table (a row click picks it)."""
    (entry_outputs, identity, remove_request_btn, request_pick, requests_table, state) = _parts(
        page, "entry_outputs identity remove_request_btn request_pick requests_table state")
    empty_view, entry_view, then_model = _parts(views, "empty_view entry_view then_model")

    def on_remove_request(key, shown, studio, request: gr.Request):
        """Withdraw request ``key`` (an identity's key, a string such as '1'): its identity, adapter and files are
        deleted and the model becomes exactly the model without it; ``shown``: the identity the page shows, kept."""
        studio = _session(studio, request, new_ok=False)
        if not isinstance(key, str) or not key:
            raise _error("choose the request to remove: click its row in the table, or pick it in the list",
                         "Cannot remove")
        try:
            gone = studio.remove(key)
        except StudioError as e:
            raise _error(str(e), "Cannot remove") from e
        text = (f"Removed request {gone.key} · {gone.name}: its adapter and its files are deleted, and the model "
                "no longer applies it.")
        if not studio.entries:
            return empty_view(studio, text + " Add a face to begin.")
        entry = studio.get(shown if isinstance(shown, str) and shown in studio.entries else None)
        if entry.ready:
            studio.prefill(entry.key)
        return entry_view(studio, entry, text)

    then_model(remove_request_btn.click(on_remove_request, [request_pick, identity, state], entry_outputs,
                                        api_name="remove_request", preprocess=False, show_progress_on=request_pick,
                                        concurrency_limit=4, concurrency_id="render"))

    def on_row(evt: gr.SelectData):
        row = evt.row_value
        return row[0] if row else gr.skip()

    requests_table.select(on_row, None, request_pick, api_visibility="private", show_progress="hidden")


def build_demo(default_steps: int = DEFAULT_STEPS, backend_label: str = EMBEDDED_LABEL,
               face_world: bool = True) -> gr.Blocks:
    """The page. ``backend_label``: the live backend's line (``Resources.backend_label``); ``face_world``: offer
    face-world examples (only the embedded backend can invert them)."""
    # gradio's cache sweep: every minute, its own cached files older than CACHE_MINUTES go (session folders are kept
    # fresh by the reaper while their session lives, and deleted when it ends)
    with gr.Blocks(title="legato: continuous identity unlearning", delete_cache=(60, CACHE_MINUTES * 60)) as demo:
        page = _layout(default_steps, backend_label, face_world)
        views = _views(page)
        _wire_adding(page, views)
        _wire_forgetting(page, views)
        _wire_intensity(page, views)
        _wire_adapters(page, views)
        _wire_model(page, views)
        _wire_attack(page)
        demo.unload(on_unload)
    return demo


demo = build_demo()


def launch_options() -> dict:
    """launch() settings shared by ``main`` and the tests: no run history of face photos kept in the browser,
    no monitoring endpoint, only the API link in the footer, and a deleted file's URL answers 404."""
    return {"show_error": False, "run_history": False, "enable_monitoring": False, "footer_links": ["api"],
            "theme": gr.themes.Soft(), "app_kwargs": {"middleware": [Middleware(MissingFileAs404)]}}


def load_resources(spec: BackendSpec) -> Resources:
    """Build the process-wide resources on the backend the flags chose (the embedded default: as it always was),
    before the first visitor; a diffusers backend is judged by its insightface pack."""
    if spec.is_default:
        return get_resources()
    backend = spec.load()
    # a diffusers backend is judged by insightface when a pack is given; without one the app runs with no curve
    judge = spec.judge(backend) if spec.kind != "embedded" and spec.insightface_pack else None
    return set_resources(Resources(backend, judge=judge, label=spec.label(backend)))


def main(argv: list[str] | None = None) -> None:
    global demo, IDLE_MINUTES
    ap = argparse.ArgumentParser(description="legato demo (gradio); every flag of the backend group can also be set "
                                             "with its LEGATO_* environment variable, e.g. LEGATO_BACKEND=ddpm")
    ap.add_argument("--host", default=None,
                    help="address to bind (default 127.0.0.1; 0.0.0.0 on Hugging Face Spaces, where SPACE_ID is set)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    ap.add_argument("--share", action="store_true", help="open a temporary public gradio.live link")
    ap.add_argument("--max-jobs", type=int, default=int(os.environ.get("LEGATO_MAX_JOBS", 1)),
                    help="training jobs that may run at once across all sessions; others wait in a queue")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="default training steps")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LEGATO_THREADS", 0)),
                    help="torch threads per operation (0: torch's default)")
    ap.add_argument("--max-file-size", default=MAX_FILE_SIZE, help="largest upload, e.g. 10mb")
    ap.add_argument("--idle-minutes", type=float, default=IDLE_MINUTES,
                    help="a session with no request for this long ends and its files are deleted (LEGATO_IDLE_MINUTES)")
    add_backend_options(ap, judge=False, environ=os.environ)
    args = ap.parse_args(argv)
    if args.max_jobs < 1:
        ap.error("--max-jobs must be at least 1")
    if not args.idle_minutes > 0:
        ap.error("--idle-minutes must be more than 0")
    spec = BackendSpec.from_args(args)
    try:
        spec.check()  # flags (or LEGATO_* variables) that are wrong fail here, before anything loads
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    JOB_QUEUE.max_jobs = args.max_jobs
    host = args.host or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    try:
        res = load_resources(spec)  # load the generator once, before the first visitor
    except (ValueError, FileNotFoundError, ImportError) as e:
        ap.error(str(e))
    print(f"legato demo: backend {res.backend_label}")
    if not res.face_world and res.judge is None:
        print("legato demo: no insightface pack (--insightface-pack), so no judge: forgetting curves are off")
    if args.steps != DEFAULT_STEPS or not spec.is_default or args.idle_minutes != IDLE_MINUTES:
        IDLE_MINUTES = args.idle_minutes
        demo = build_demo(default_steps=args.steps, backend_label=res.backend_label, face_world=res.face_world)
    # quiet: gradio's own start-up lines would tell people to "set share=True in launch()"; these are the app's
    _, local_url, share_url = demo.queue(default_concurrency_limit=2).launch(
        server_name=host, server_port=args.port, share=args.share, max_file_size=args.max_file_size, quiet=True,
        prevent_thread_lock=True, **launch_options())
    where = "reachable from other machines" if host not in ("127.0.0.1", "localhost", "::1") else "this machine only"
    print(f"legato demo: open {local_url} ({where})")
    if share_url:
        print(f"legato demo: public link {share_url} (temporary; anyone with it can use this demo)")
    elif args.share:
        print("legato demo: no public link could be made (no network?); the local address above works")
    else:
        print("legato demo: for a temporary public link, start it with --share (bash scripts/demo.sh --share)")
    print("legato demo: Ctrl+C stops it")
    try:
        demo.block_thread()
    finally:
        close_sessions()


if __name__ == "__main__":
    main()
