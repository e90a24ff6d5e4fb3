"""The web page, driven in a real headless Chromium against a live server (uvicorn + the real
engine on imagine/shapes): what it offers comes from the server, Generate runs a job whose
progress and previews show before the image, results are kept across reloads, a job can be
canceled, and the server's errors show where they belong. Every test also checks that the page
fetched nothing from another origin and threw no error (tests/http/browser.py).

IMAGINE_PAGE_SCREENSHOTS=docs writes the README's screenshots (docs/page-desktop.png,
docs/page-phone.png) from the layout test.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.imaging import read_parameters
from imagine.models.builtin import WEIGHTS_DIR
from imagine.settings import Settings
from tests.http.browser import PHONE, chromium, open_page
from tests.http.live import serve
from tests.jobs.live import MODEL, sse, steps_done

pytestmark = pytest.mark.slow

COPY = "local/shapes-copy"  # the embedded weights again, served from model_dirs as an SD model
LONG = 400  # steps: many seconds on this CPU unless canceled
WAIT_MS = 60_000  # a generous bound on a busy machine; expect() returns as soon as it holds

# The lowest contrast ratios (WCAG's formula) of the visible, enabled text on the page against
# the background it is drawn on, with the element each belongs to.
CONTRAST = r"""() => {
  const rgba = (css) => css.match(/[\d.]+/g).map(Number).concat([1]).slice(0, 4);
  const lum = ([r, g, b]) => [r, g, b]
    .map((c) => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4)
    .reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
  const behind = (element) => {
    for (let e = element; e; e = e.parentElement) {
      const colour = rgba(getComputedStyle(e).backgroundColor);
      if (colour[3] > 0) return colour;
    }
    return [255, 255, 255, 1];
  };
  const ratios = [];
  const text = "h1, h2, p, label, legend, button, a, span, dt, dd, strong, input, select, textarea";
  for (const element of document.querySelectorAll(text)) {
    if (!element.checkVisibility() || element.disabled) continue;
    if (!element.textContent.trim() && !element.value) continue;
    const [a, b] = [lum(rgba(getComputedStyle(element).color)), lum(behind(element))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    ratios.push([Math.round(ratio * 100) / 100, element.id || element.textContent.slice(0, 40)]);
  }
  return ratios.sort((x, y) => x[0] - y[0]).slice(0, 3);
}"""

# Records, in order, what the page shows while a job runs: progress values, live previews and
# gallery images (what a user sees change, not what the code calls).
WATCH = """() => {
  window.seen = [];
  const progress = document.getElementById("progress");
  new MutationObserver(() => seen.push(["progress", progress.value, progress.max]))
    .observe(progress, {attributes: true});
  const preview = document.getElementById("preview");
  new MutationObserver(() => preview.src && seen.push(["preview", preview.src.slice(0, 22)]))
    .observe(preview, {attributes: true, attributeFilter: ["src"]});
  const gallery = document.getElementById("gallery");
  new MutationObserver(() => gallery.querySelectorAll("img").forEach(
    (img) => seen.push(["image", img.alt]))).observe(gallery, {childList: true});
}"""


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = tmp_path_factory.mktemp("models")
    (models / "local").mkdir()
    (models / COPY).symlink_to(WEIGHTS_DIR, target_is_directory=True)
    settings = Settings(
        preload=[MODEL],
        model_dirs=[models],
        max_steps=LONG,
        max_request_s=0,
        request_timeout_s=3600,  # LONG jobs queued on a busy machine must not be refused
        batch_wait_ms=0.0,
        per_client_queue=4,
        # One request at a time, so jobs behind a running one queue (the page shows their
        # place); with more, step-level batching lets them join it at once.
        max_batch_size=1,
    )
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    with open_page(browser, base_url) as page:
        _ready(page)
        yield page


def _ready(page: Page) -> None:
    """Generate is enabled once the form holds the selected model's values from the server."""
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()


def _prompt(page: Page):
    return page.get_by_label("Prompt", exact=True)


def _create(base_url: str, prompt: str, steps: int) -> str:
    """A job from an API client on the same address as the browser (the same queue share)."""
    r = httpx.post(
        f"{base_url}/v1/predictions",
        json={"version": MODEL, "input": {"prompt": prompt, "num_inference_steps": steps}},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _until_running(base_url: str, job_id: str) -> None:
    for event, _, data in sse(f"{base_url}/v1/predictions/{job_id}/events"):
        if event == "status" and data["status"] == "processing":
            return
    raise AssertionError(f"job {job_id} ended before it ran")


def _cancel(base_url: str, *job_ids: str) -> None:
    for job_id in job_ids:
        assert httpx.post(f"{base_url}/v1/predictions/{job_id}/cancel").status_code == 200


def test_the_root_serves_the_page_to_a_browser_and_json_to_api_clients(base_url: str) -> None:
    page = httpx.get(base_url, headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'src="page/app.js"' in page.text
    status = httpx.get(f"{base_url}/models/{MODEL}").json()
    with httpx.Client() as bare:
        del bare.headers["accept"]
        assert bare.get(base_url).json() == status
    for accept in ("*/*", "application/json", "image/png"):
        assert httpx.get(base_url, headers={"accept": accept}).json() == status
    script = httpx.get(f"{base_url}/page/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    again = httpx.get(f"{base_url}/page/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304
    assert httpx.get(f"{base_url}/page/../../settings.py").status_code == 404
    assert httpx.get(f"{base_url}/page/index.py").status_code == 404


def test_the_model_list_and_every_choice_come_from_the_server(page: Page, base_url: str) -> None:
    listing = httpx.get(f"{base_url}/models").json()
    model = page.get_by_label("Model", exact=True)
    expect(model).to_have_value(listing["default_model"])
    offered = model.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert offered == [m["model_id"] for m in listing["models"]]
    assert {MODEL, COPY} <= set(offered)
    scheduler = page.get_by_label("Scheduler", exact=True)
    assert [model.evaluate("e => e.tagName"), scheduler.evaluate("e => e.tagName")] == [
        "SELECT"
    ] * 2
    for model_id in (COPY, MODEL):  # the copy is an SD-family model: other defaults
        model.select_option(model_id)
        info = httpx.get(f"{base_url}/models/{model_id}/info").json()
        defaults, limits = info["defaults"], info["limits"]
        steps = page.get_by_label("Steps", exact=True)
        expect(steps).to_have_value(str(defaults["num_inference_steps"]))
        expect(steps).to_have_attribute("max", str(limits["max_steps"]))
        expect(page.get_by_label("Guidance", exact=True)).to_have_value(
            f"{defaults['guidance_scale']:g}"
        )
        expect(page.get_by_label("Width", exact=True)).to_have_value(str(defaults["width"]))
        expect(scheduler).to_have_value(defaults["scheduler"])
        choices = scheduler.locator("option").evaluate_all("options => options.map(o => o.value)")
        assert choices == [
            name
            for base in info["schedulers"]
            for name in [base] + [f"{base}:{o}" for o in info["sigma_options"].get(base, [])]
        ]
        presets = page.get_by_label("Preset", exact=True).locator("option")
        assert presets.evaluate_all("options => options.map(o => o.value)") == [
            f"{s['width']}x{s['height']}" for s in info["size_presets"]
        ] + [""]
        counts = page.get_by_label("Images", exact=True).locator("option")
        expect(counts).to_have_count(limits["max_outputs"])


def test_generate_shows_progress_and_live_previews_before_the_image(
    page: Page, base_url: str
) -> None:
    prompt = "a red circle on the left, blue background"
    page.evaluate(WATCH)
    _prompt(page).fill(prompt)
    page.get_by_label("Steps", exact=True).fill("24")
    _prompt(page).press("Enter")  # Enter in the prompt generates
    image = page.locator("#gallery").get_by_role("img", name=prompt)
    expect(image).to_be_visible(timeout=WAIT_MS)
    seen = page.evaluate("window.seen")
    steps = [value for kind, value, *rest in seen if kind == "progress" and rest == [24]]
    assert len(set(steps)) >= 3 and steps == sorted(steps) and steps[-1] == 24, seen
    kinds = [kind for kind, *_ in seen]
    assert "preview" in kinds and kinds.index("preview") < kinds.index("image"), kinds
    assert all(rest[0].startswith("data:image/jpeg") for kind, *rest in seen if kind == "preview")
    expect(page.get_by_role("progressbar")).to_have_attribute("value", "24")
    expect(page.get_by_role("status")).to_contain_text("Done: 1 image")
    # it went through the job API, with the parameters the form showed
    jobs = httpx.get(f"{base_url}/v1/predictions").json()["results"]
    job = next(j for j in jobs if j["input"]["prompt"] == prompt)
    assert job["status"] == "succeeded" and job["input"]["num_inference_steps"] == 24
    assert job["input"]["scheduler"] == page.get_by_label("Scheduler", exact=True).input_value()
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]


def test_the_gallery_survives_a_reload_and_gives_back_the_settings(page: Page) -> None:
    prompt = "a small green square at the bottom, white background"
    _prompt(page).fill(prompt)
    page.get_by_label("Width", exact=True).fill("96")
    page.get_by_label("Seed", exact=True).fill("4242")  # typing a seed turns Random off
    page.get_by_label("Steps", exact=True).fill("8")
    page.get_by_role("button", name="Generate").click()
    tile = page.locator("#gallery").get_by_role("button", name=prompt)
    expect(tile).to_be_visible(timeout=WAIT_MS)
    page.reload()
    _ready(page)
    expect(tile).to_be_visible()
    expect(tile.get_by_role("img")).to_have_attribute("alt", re.compile("seed 4242"))
    _prompt(page).fill("something else")
    page.get_by_label("Random seed").check()
    tile.focus()
    page.keyboard.press("Enter")  # the gallery works from the keyboard
    viewer = page.get_by_role("dialog")
    expect(viewer).to_be_visible()
    expect(viewer).to_contain_text("4242")
    expect(viewer).to_contain_text("96 × 64")
    with page.expect_download() as download:
        viewer.get_by_role("link", name="Download").click()
    assert "4242" in download.value.suggested_filename
    data = Path(download.value.path()).read_bytes()
    assert Image.open(io.BytesIO(data)).size == (96, 64)
    embedded = read_parameters(data)
    assert embedded is not None and embedded["seed"] == 4242 and embedded["prompt"] == prompt
    viewer.get_by_role("button", name="Use these settings").click()
    expect(viewer).to_be_hidden()
    expect(_prompt(page)).to_have_value(prompt)
    expect(page.get_by_label("Seed", exact=True)).to_have_value("4242")
    expect(page.get_by_label("Random seed")).not_to_be_checked()
    expect(page.get_by_label("Width", exact=True)).to_have_value("96")
    page.keyboard.press("Escape")  # nothing running: Escape does nothing harmful
    tile.click()
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()


def test_a_queued_job_shows_its_place_and_cancel_stops_it(page: Page, base_url: str) -> None:
    before = steps_done(base_url)
    blocker = _create(base_url, "a purple square", LONG)
    _until_running(base_url, blocker)
    _prompt(page).fill("a yellow circle in the center")
    page.get_by_label("Steps", exact=True).fill(str(LONG))
    page.get_by_role("button", name="Generate").click()
    status = page.get_by_role("status")
    expect(status).to_contain_text("Queued: position 1", timeout=WAIT_MS)
    _cancel(base_url, blocker)
    progress = page.get_by_role("progressbar")
    expect(progress).to_have_attribute("max", str(LONG))
    expect(progress).to_have_attribute("value", re.compile(r"^(?:[2-9]|\d\d+)$"), timeout=WAIT_MS)
    page.get_by_role("button", name="Cancel").click()
    expect(status).to_contain_text("canceled", timeout=WAIT_MS)
    expect(page.locator("#gallery li").first).to_contain_text("canceled")
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    jobs = httpx.get(f"{base_url}/v1/predictions").json()["results"]
    assert jobs[0]["input"]["prompt"] == "a yellow circle in the center"
    assert jobs[0]["status"] == "canceled"
    assert steps_done(base_url) - before < LONG  # both stopped long before their 400 steps


def test_a_bad_value_shows_the_servers_message_next_to_the_field(page: Page, base_url: str) -> None:
    _prompt(page).fill("a blue triangle")
    width = page.get_by_label("Width", exact=True)
    width.fill("60")
    page.get_by_role("button", name="Generate").click()
    refused = httpx.post(
        f"{base_url}/v1/predictions",
        json={"version": MODEL, "input": {"prompt": "a blue triangle", "width": 60}},
    )
    assert refused.status_code == 400
    message = refused.json()["invalid_fields"][0]["message"]
    expect(width).to_have_attribute("aria-invalid", "true")
    expect(width).to_have_accessible_description(message)
    expect(page.locator("#width-error")).to_have_text(message)
    width.fill("64")
    page.get_by_label("Steps", exact=True).fill("4")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#width-error")).to_be_hidden()
    expect(page.locator("#gallery").get_by_role("img", name="a blue triangle")).to_be_visible(
        timeout=WAIT_MS
    )


def test_a_full_queue_shows_the_wait(page: Page, base_url: str) -> None:
    blocker = _create(base_url, "a white circle", LONG)
    _until_running(base_url, blocker)
    # per_client_queue: four short jobs fill this client's share behind the running one
    queued = [_create(base_url, f"a red square {i}", 1) for i in range(4)]
    try:
        _prompt(page).fill("a green circle")
        page.get_by_role("button", name="Generate").click()
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text(re.compile(r"busy: try again in \d+ s"))
    finally:
        _cancel(base_url, *queued, blocker)
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()


def test_the_page_fits_a_desktop_and_a_phone(page: Page, tmp_path: Path) -> None:
    shots = Path(os.environ.get("IMAGINE_PAGE_SCREENSHOTS") or tmp_path)
    page.get_by_label("Preset", exact=True).select_option("256x256")
    page.get_by_label("Images", exact=True).select_option("4")
    for prompt, seed in (
        ("a blue circle above a red square, yellow background", "3"),
        ("a large yellow triangle at the top, blue background", "7"),
    ):
        _prompt(page).fill(prompt)
        page.get_by_label("Seed", exact=True).fill(seed)
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#gallery").get_by_role("img", name=prompt)).to_have_count(
            4, timeout=WAIT_MS
        )
    page.locator("#gallery img").evaluate_all("imgs => Promise.all(imgs.map(i => i.decode()))")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=shots / "page-desktop.png")
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        lowest = page.evaluate(CONTRAST)
        assert len(lowest) == 3 and lowest[0][0] >= 7.0, (scheme, lowest)  # WCAG AAA
    page.emulate_media(color_scheme="light")
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for label in ("Model", "Prompt", "Width", "Height", "Scheduler", "Seed"):
        box = page.get_by_label(label, exact=True).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    for name in ("Generate", "Cancel"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"]
    page.screenshot(path=shots / "page-phone.png", full_page=True)
