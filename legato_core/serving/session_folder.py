"""One session's folder on disk: every file a session writes (renders the page shows, an entry's fixed images,
exported adapters) lives in it, so that ending the session deletes everything at once."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path

from PIL import Image

from .errors import StudioError


class SessionFolder:
    """Made on first use under ``root`` (default: the system temp dir), removed by :meth:`remove`."""

    KEEP_FILES = 6  # rendered files of one kind kept (the page has loaded the older ones)

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else None
        self._path: Path | None = None
        self._published: dict[str, deque[Path]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.removed = False

    def path(self) -> Path:
        """The folder, made now if this is the first file."""
        with self._lock:
            if self.removed:
                raise StudioError("this session has ended; reload the page")
            if self._path is None:
                if self.root is not None:
                    self.root.mkdir(parents=True, exist_ok=True)
                self._path = Path(tempfile.mkdtemp(prefix="legato-session-", dir=self.root))
            return self._path

    @property
    def folder(self) -> Path | None:
        """The folder, None before the first file (and after :meth:`remove`)."""
        return self._path

    def files(self) -> list[Path]:
        """Every file in the folder now."""
        folder = self._path
        if folder is None or not folder.exists():
            return []
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def files_of(self, key: str) -> list[Path]:
        """The fixed images written for entry ``key`` (see :meth:`fixed_image`)."""
        folder = self._path
        if folder is None:
            return []
        return [p for p in folder.glob(f"*-{key}.*") if p.is_file()]

    @staticmethod
    def _save_image(im: Image.Image, path: Path) -> Path:
        tmp = path.with_name(f".{path.name}")
        if path.suffix == ".jpeg":
            im.save(tmp, "JPEG", quality=75)  # what gradio's own JPEG encoding of the grid used
        else:
            im.save(tmp, "PNG")
        os.replace(tmp, path)  # never a half-written file on the page
        return path

    def publish(self, image: Image.Image, kind: str, fmt: str = "png") -> Path:
        """Write an image the page shows (``kind``: grid, preview, ...) and return its path; only the last
        ``KEEP_FILES`` of each kind are kept."""
        path = self.path() / f"{kind}.{next(self._ids)}.{'jpeg' if fmt in ('jpg', 'jpeg') else 'png'}"
        self._save_image(image, path)
        with self._lock:
            kept = self._published.setdefault(kind, deque())
            kept.append(path)
            while len(kept) > self.KEEP_FILES:
                kept.popleft().unlink(missing_ok=True)
        return path

    def fixed_image(self, kind: str, key: str, image: Image.Image) -> Path:
        """An entry's image that never changes (its source crop, its inversion), written once."""
        path = self.path() / f"{kind}-{key}.png"
        if not path.exists():
            self._save_image(image, path)
        return path

    def remove(self) -> None:
        """Delete the folder and everything in it; later writes are refused."""
        with self._lock:
            self.removed = True
            self._published.clear()
            if self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                self._path = None
