"""An offline start: once .venv exists, scripts/setup_env.sh runs no pip (a stamp of the requirements files' hash),
and scripts/demo.sh and scripts/test.sh start without any network (run in a network namespace of their own, with
pip poisoned so that any pip call fails at once)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POISON = {"PIP_CONSTRAINT": "/nonexistent/pip-must-not-run.txt"}  # any `pip install` fails reading this


def _netns_prefix() -> list[str] | None:
    """A command prefix that runs its command with no network but loopback (brought up), or None."""
    if not shutil.which("unshare"):
        return None
    for flags in (["-n"], ["-rn"]):  # root, else an unprivileged user namespace
        probe = subprocess.run(["unshare", *flags, "true"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", *flags, "sh", "-c", '(ip link set lo up || true) 2>/dev/null; exec "$@"', "sh"]
    return None


NETNS = _netns_prefix()


def _fake_repo(tmp_path: Path) -> Path:
    """The setup script and the requirements files, with a fake .venv whose pip logs its calls (or fails)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup_env.sh", repo / "scripts")
    for req in ROOT.glob("requirements*.txt"):
        shutil.copy(req, repo)
    bin_ = repo / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "activate").write_text(f'PATH="{bin_}:$PATH"\n')
    _pip(repo, ok=True)
    for f in bin_.iterdir():
        f.chmod(0o755)
    return repo


def _pip(repo: Path, ok: bool) -> None:
    pip = repo / ".venv" / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\necho "$*" >> "{repo}/pip.log"\nexit {0 if ok else 1}\n')
    pip.chmod(0o755)


def _pip_calls(repo: Path) -> list[str]:
    log = repo / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def _setup(repo: Path, req: str, offline: bool = False) -> subprocess.CompletedProcess:
    cmd = ["bash", "scripts/setup_env.sh", req]
    if offline and NETNS:
        cmd = [*NETNS, *cmd]
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)


def test_setup_runs_pip_once_then_never_while_the_requirements_are_unchanged(tmp_path):
    repo = _fake_repo(tmp_path)
    first = _setup(repo, "requirements-dev.txt")
    assert first.returncode == 0, first.stderr
    calls = _pip_calls(repo)
    assert calls == ["install -q torch==2.13.0", "install -q -r requirements-dev.txt"], calls
    assert not any("--upgrade pip" in c for c in calls), "upgrading pip is not part of start-up"
    stamp = (repo / ".venv" / ".legato-installed").read_text()
    assert {line.split()[0] for line in stamp.splitlines()} == {"requirements-dev.txt", "requirements.txt",
                                                                "requirements-backends.txt"}

    _pip(repo, ok=False)  # from now on a pip call fails, and the namespace (if any) has no network
    for req in ("requirements-dev.txt", "requirements.txt"):  # the dev file installed the runtime one too
        again = _setup(repo, req, offline=True)
        assert again.returncode == 0, again.stderr
    assert len(_pip_calls(repo)) == 2, "no pip call while the stamp matches"

    with open(repo / "requirements.txt", "a") as f:  # a changed requirement: pip runs again (and fails here)
        f.write("\nnewpackage>=1\n")
    changed = _setup(repo, "requirements.txt")
    assert changed.returncode != 0 and _pip_calls(repo)[2:] == ["install -q torch==2.13.0"]
    assert _setup(repo, "requirements-dev.txt").returncode != 0, "it includes requirements.txt: stale too"


def _real_venv() -> None:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout")
    if not (ROOT / ".venv" / ".legato-installed").exists():
        pytest.skip("this .venv was not made by scripts/setup_env.sh (no stamp): run it once")
    if NETNS is None:
        pytest.skip("no network namespace here (unshare -n / -rn)")


def test_test_script_starts_without_network_or_pip():
    _real_venv()
    env = {**os.environ, **POISON}
    cmd = [*NETNS, "bash", "scripts/test.sh", "--collect-only", "-q", "tests/test_images.py"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "All checks passed" in run.stdout and "tests/test_images.py: " in run.stdout, run.stdout[-2000:]


def test_demo_starts_without_network_or_pip_and_speaks_its_own_words():
    _real_venv()
    env = {**os.environ, **POISON, "OMP_NUM_THREADS": "1"}
    cmd = [*NETNS, "bash", "scripts/demo.sh", "--port", "7999", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if "Ctrl+C stops it" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    out = "".join(lines)
    assert "legato demo: open http://127.0.0.1:7999/" in out, out[-3000:]
    assert "share=True" not in out and "launch()" not in out, "gradio's own share hint is replaced"
    assert "start it with --share" in out
