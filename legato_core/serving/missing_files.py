"""An ASGI wrapper: a file URL whose file is gone (its session ended) answers 404, quietly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def _gone(target: str) -> bool:
    """An absolute path that names no file (relative paths and odd names are left to gradio)."""
    try:
        return target.startswith("/") and not Path(target).is_file()
    except (OSError, ValueError):
        return False


class MissingFileAs404:
    """Gradio answers a deleted file's URL with 403, or with a traceback in the log when the file goes while it is
    being served (a refused upload is deleted as the page fetches its preview); here both are a plain 404."""

    def __init__(self, app: ASGIApp, marker: str = "/file="):
        self.app, self.marker = app, marker

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or self.marker not in scope.get("path", ""):
            await self.app(scope, receive, send)
            return
        target = scope["path"].split(self.marker, 1)[1]
        if _gone(target):
            await self._not_found(send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except (FileNotFoundError, RuntimeError):
            if not _gone(target):
                raise  # not a file that went away: a real fault
            if not started:
                await self._not_found(send)

    @staticmethod
    async def _not_found(send: Callable) -> None:
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"Not found"})
