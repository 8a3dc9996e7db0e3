"""What the browser tests share: Debian chromium driven by Playwright, their marks, the page size,
the field lookup and screenshots. The `browser` fixture itself lives in conftest.py.

Screenshots go to test-artifacts/ (git-ignored); the README's come from docs/screenshots.py, on a
run trained to the end.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BROWSER_MARKS = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium "
                                                     "(apt-get install chromium); browser tests need it"),
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),  # from gradio's queue internals
]
VIEWPORT = {"width": 1440, "height": 1000}
TIMEOUT_MS = 90_000
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


@contextlib.contextmanager
def launch_chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def field(page, label: str):
    """The visible field labelled `label`; a Gradio field's accessible name runs on into its info line."""
    return page.get_by_label(re.compile(rf"^\s*{re.escape(label)}(\s|$)")).filter(visible=True)


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))