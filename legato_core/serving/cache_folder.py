"""The web framework's cache folder, owned by one server: emptied when the server starts, so that no file of an
earlier run (a session cut off by a restart or a crash) outlives the time the page promises."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

PREFIX = "legato-server-"
LEGACY_PREFIX = "legato-sessions-"  # session roots of servers from before these folders, in gradio's shared cache


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def remove_stopped_servers(parent: str | Path, pid: int | None = None) -> None:
    """Delete the cache folders under ``parent`` of servers that no longer run (and, given ``pid``, that pid's)."""
    for folder in [*Path(parent).glob(f"{PREFIX}*"), *Path(parent).glob(f"{LEGACY_PREFIX}*")]:
        other = folder.name.rsplit("-", 1)[-1]
        if other.isdigit() and (int(other) == pid or not _running(int(other))):
            shutil.rmtree(folder, ignore_errors=True)


def claim_cache_folder(parent: str | Path, pid: int | None = None) -> Path:
    """``parent/legato-server-<pid>``, made empty, for this server alone; the folders of servers that no longer run
    are deleted (a folder under this pid is an earlier process's: pids are reused, in containers often)."""
    parent, pid = Path(parent), os.getpid() if pid is None else pid
    parent.mkdir(parents=True, exist_ok=True)
    remove_stopped_servers(parent, pid)
    own = parent / f"{PREFIX}{pid}"
    own.mkdir()
    return own


def cache_parent(environ: Mapping[str, str], default: str | Path) -> Path:
    """Where server cache folders go: ``LEGATO_CACHE_DIR``, else gradio's ``GRADIO_TEMP_DIR`` (a child process of a
    server inherits the server's own folder there: its parent is used), else ``default``."""
    if environ.get("LEGATO_CACHE_DIR"):
        return Path(environ["LEGATO_CACHE_DIR"])
    given = environ.get("GRADIO_TEMP_DIR")
    if given:
        path = Path(given)
        return path.parent if path.name.startswith(PREFIX) else path
    return Path(default)
