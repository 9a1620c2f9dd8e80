"""Render an HTML file in headless Chromium: a screenshot and the page's console errors (used by the tests and
``benchmarks/evolution.py`` to check that a report really renders)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional

__all__ = ["chromium", "render", "blank"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> Optional[str]:
    """The path of a Chromium (or Chrome) executable on PATH, None when there is none."""
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def render(html: str | Path, png: str | Path, width: int = 1200, height: int = 3000,
           timeout: float = 120) -> list[str]:
    """Load ``html`` in headless Chromium, write a ``width`` x ``height`` screenshot to ``png`` and return the
    console messages the page logged (empty: none). Raises ``RuntimeError`` when Chromium
    is missing or fails."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no Chromium on PATH (Debian: apt-get install chromium)")
    png = Path(png).resolve()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", f"--screenshot={png}", f"--window-size={width},{height}", Path(html).resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.exists():
        raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")
    # The page's console messages appear as "...:CONSOLE:<line>] "message", source: ..." whatever their level
    # (console.error, uncaught exceptions, resources that failed to load); a report has no script, so any is wrong.
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def blank(png: str | Path) -> bool:
    """Whether a screenshot is one flat colour (nothing rendered)."""
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    return float(img[..., :3].std()) < 1e-3
