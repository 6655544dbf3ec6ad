"""Offline figure files: interactive HTML that works without internet, and PNG through a local Chromium.

plotly's own static export (kaleido) is not installed here, and the CDN plotly.js that ``write_html`` links by
default cannot load offline. HTML files therefore reference a ``plotly.min.js`` written beside them (plotly
ships it), and PNGs are screenshots of that HTML taken by headless Chromium through Playwright when both are
available; when they are not, :func:`write_png` says why and the caller keeps the HTML.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM = os.environ.get("LEGATO_CHROMIUM", "/usr/bin/chromium")
_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def write_html(fig, path: str | Path) -> Path:
    """Interactive HTML plus ``plotly.min.js`` in the same folder (no CDN: opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs="directory")
    return path


def static_export_unavailable() -> str | None:
    """None when PNGs can be written, else the reason they cannot."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (install chromium or set LEGATO_CHROMIUM)"
    return None


def write_png(figures: dict[str | Path, object], scale: float = 2.0) -> list[Path]:
    """Screenshot each plotly figure (``{png_path: fig}``) with headless Chromium; raises RuntimeError
    with the reason when no exporter is available."""
    reason = static_export_unavailable()
    if reason:
        raise RuntimeError(f"PNG export unavailable: {reason}")
    from playwright.sync_api import sync_playwright

    written = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            for i, (out, fig) in enumerate(figures.items()):
                html = Path(tmp) / f"figure{i}.html"
                fig.write_html(html, include_plotlyjs=True, full_html=True, config={"staticPlot": True})
                width = int(fig.layout.width or 900)
                height = int(fig.layout.height or 450)
                page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale)
                page.goto(html.as_uri())
                page.wait_for_selector(".main-svg", timeout=20_000)
                out = Path(out)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.locator(".plotly-graph-div").first.screenshot(path=str(out))
                page.close()
                written.append(out)
        finally:
            browser.close()
    return written
