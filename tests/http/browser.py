"""A real headless Chromium (Debian's, driven by Playwright) for the web page's tests.

`playwright install` downloads its own browser build, which this project cannot rely on; the
page is tested in the system's chromium, which `scripts/test-deps.sh` installs when missing.
`SameOrigin` records every request a page makes, so a test can insist that the page fetched
nothing from another origin.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

CHROMIUM = os.environ.get("IMAGINE_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless browser; skips the module when no chromium is installed."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM}: bash scripts/test-deps.sh installs it")
    with sync_playwright() as playwright:
        # --no-sandbox: the tests may run as root (CI containers), where the sandbox cannot start
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class SameOrigin:
    """The URLs of every request a page made that did not go to `origin` (data: and blob:
    URLs stay inside the page)."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    count: int = 0

    def __call__(self, request: Request) -> None:
        self.count += 1
        url = request.url
        if url.startswith(("data:", "blob:")):
            return
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)


@contextmanager
def open_page(
    browser: Browser, base_url: str, viewport: dict[str, int] = DESKTOP
) -> Iterator[Page]:
    """A page in a fresh context (its own storage) at `base_url`, its console errors and
    uncaught exceptions failing the test, and every request checked to stay on the server."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    origin = SameOrigin(base_url)
    page.on("request", origin)
    # The page's own files must all load (a missing module fails silently otherwise).
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and urlsplit(r.url).path.startswith("/page/")
            else None
        ),
    )
    try:
        page.goto(base_url)
        yield page
    finally:
        context.close()
    assert origin.count > 0
    assert origin.foreign == [], origin.foreign
    # The server's own 4xx answers show up as console errors ("Failed to load resource");
    # anything else is the page's bug.
    assert [e for e in errors if "Failed to load resource" not in e] == []
