"""Soak test of the demo server: N sessions one after another through its API (gradio_client), the server's RSS after
each one.

Each session does what a visitor does: add a face-world identity, forget it (10 steps), move the slider a few times,
switch composition on and off, download the adapter, then leave (by default as a closed tab: the client's heartbeat
stops and gradio runs the app's unload; ``--leave end`` presses "End session" instead). After the session's folder is
gone (its files deleted) and a short settle, the server's resident memory is read from /proc.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/soak.py --sessions 30 --json runs/soak.json

It starts its own server (``app.py`` on a free port, its gradio cache in a temporary folder) unless ``--url`` and
``--pid`` name a running one. Traffic goes to 127.0.0.1 only, and the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, step: float = 0.25) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def session_folders(cache: Path | None, pid: int) -> list[Path]:
    if cache is None:
        return []
    root = cache / f"legato-sessions-{pid}"
    return list(root.iterdir()) if root.exists() else []


def one_session(url: str, face_id: int, steps: int, leave: str) -> dict:
    from gradio_client import Client

    t0 = time.time()
    c = Client(url, verbose=False)
    c.predict(face_id, api_name="/add_identity")
    c.predict("1", steps, api_name="/forget")
    deadline, text = time.time() + 600, ""
    while time.time() < deadline:
        text = c.predict("1", api_name="/poll")[6]
        if text.startswith(("Done", "Failed", "Cancelled")):
            break
        time.sleep(0.5)
    if not text.startswith("Done"):
        raise RuntimeError(f"session for {face_id}: {text!r}")
    for t in (0.2, 0.6, 1.0, 1.4, 0.0, 0.8):
        c.predict(t, "1", api_name="/render")
    c.predict(0.8, "1", api_name="/curve")
    c.predict(True, "1", api_name="/compose")
    c.predict(False, "1", api_name="/compose")
    adapter = Path(c.predict("1", api_name="/export_adapter"))
    size = adapter.stat().st_size
    if leave == "end":
        c.predict(api_name="/end_session")
    c.close()  # the heartbeat stops: for the server, the tab has closed
    return {"face_id": face_id, "seconds": round(time.time() - t0, 1), "adapter_bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--steps", type=int, default=10, help="training steps per session")
    ap.add_argument("--leave", choices=["tab", "end"], default="tab",
                    help="how a session ends: the tab closes (default) or End session is pressed")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after a session's folder is gone")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    ap.add_argument("--url", help="use a running server (with --pid) instead of starting one")
    ap.add_argument("--pid", type=int, help="the running server's process id (for its RSS)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    server, cache, log = None, None, None
    if args.url:
        if not args.pid:
            ap.error("--url needs --pid")
        url, pid = args.url, args.pid
    else:
        cache = Path(tempfile.mkdtemp(prefix="legato-soak-cache-"))
        port = free_port()
        env = {**os.environ, "GRADIO_TEMP_DIR": str(cache), "GRADIO_ANALYTICS_ENABLED": "False"}
        log = open(cache.parent / f"{cache.name}.log", "w")  # open for the server's lifetime
        server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--threads",
                                   str(args.threads), "--max-file-size", "10mb"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        url, pid = f"http://127.0.0.1:{port}/", server.pid
        if not wait_for(lambda: _up(url), 240, 0.5):
            server.kill()
            raise SystemExit(f"the server did not start; see {log.name}")
    rows = []
    try:
        rows.append({"session": 0, "rss_mb": round(rss_mb(pid), 1)})
        print(f"server pid {pid} at {url}: RSS {rows[0]['rss_mb']:.0f} MB before any session", flush=True)
        for i in range(1, args.sessions + 1):
            info = one_session(url, 200_200 + i, args.steps, args.leave)
            gone = wait_for(lambda: not session_folders(cache, pid), 60)
            time.sleep(args.settle)
            row = {"session": i, **info, "rss_mb": round(rss_mb(pid), 1), "folders_gone": gone}
            rows.append(row)
            print(f"session {i:3d}: {row['seconds']:5.1f} s, RSS {row['rss_mb']:7.1f} MB"
                  f"{'' if gone else '  (its folder was still there after 60 s!)'}", flush=True)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "sessions": args.sessions,
              "steps": args.steps, "leave": args.leave, "threads": args.threads, "rows": rows}
    n5 = next((r["rss_mb"] for r in rows if r["session"] == 5), None)
    last = rows[-1]["rss_mb"]
    if n5 is not None and args.sessions >= 5:
        growth = (last - n5) / n5
        result["growth_after_5"] = round(growth, 4)
        print(f"RSS after session {args.sessions}: {last:.0f} MB; after session 5: {n5:.0f} MB "
              f"({100 * growth:+.1f} %: {'within' if abs(growth) <= 0.15 else 'NOT within'} 15 %)")
    if not all(r.get("folders_gone", True) for r in rows):
        print("some session folders outlived their session")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
