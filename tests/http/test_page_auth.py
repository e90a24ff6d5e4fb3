"""The web page with tokens on, in a real headless Chromium against a live server: the page
itself loads without a token, asks for one and says how, refuses a wrong one in words, and once
given the right one works and keeps it (and the gallery) across a reload."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.browser import chromium, open_page
from tests.http.live import serve
from tests.jobs.live import MODEL

pytestmark = pytest.mark.slow

TOKEN = "page-test-token"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL], tokens=[TOKEN], max_request_s=0, batch_wait_ms=0.0)
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def test_the_token_flow(browser: Browser, base_url: str) -> None:
    assert httpx.get(f"{base_url}/models").status_code == 401  # what the page runs into
    with open_page(browser, base_url) as page:
        token = page.get_by_label("Token", exact=True)
        expect(token).to_be_visible()
        expect(token).to_be_focused()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("needs a token")
        expect(alert).to_contain_text("press Save token")
        token.fill("not-the-token")
        page.get_by_role("button", name="Save token").click()
        expect(alert).to_contain_text("refused this token")
        token.fill(TOKEN)
        token.press("Enter")
        expect(page.get_by_label("Model", exact=True)).to_have_value(MODEL)
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()  # the form is filled
        expect(alert).to_be_hidden()
        prompt = "a white square on the right, black background"
        page.get_by_label("Prompt", exact=True).fill(prompt)
        page.get_by_label("Steps", exact=True).fill("6")
        page.get_by_role("button", name="Generate").click()
        image = page.locator("#gallery").get_by_role("img", name=prompt)
        expect(image).to_be_visible(timeout=WAIT_MS)
        page.reload()
        expect(page.get_by_label("Token", exact=True)).to_have_value(TOKEN)
        expect(page.get_by_label("Model", exact=True)).to_have_value(MODEL)
        expect(image).to_be_visible()
        expect(page.get_by_role("alert")).to_be_hidden()
    jobs = httpx.get(
        f"{base_url}/v1/predictions", headers={"authorization": f"Bearer {TOKEN}"}
    ).json()["results"]
    assert [job["input"]["prompt"] for job in jobs] == [prompt]  # the page's job, as its token's
