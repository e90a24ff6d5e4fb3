"""GET /models (the model list with state), the sizes in GET /models/{id}/info, and GET / for a
browser (the page) next to GET / for an API client (the default model's status); on a fake
engine, so these run in milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from imagine.settings import Settings
from tests.http.conftest import MakeClient

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def _pipeline(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')


async def test_models_lists_what_the_server_offers_with_state(
    make_client: MakeClient, tmp_path: Path
) -> None:
    _pipeline(tmp_path / "acme" / "painter")
    _pipeline(tmp_path / "acme--sketcher")
    settings = Settings(
        default_model="org/model", preload=["org/model", "imagine/shapes"], model_dirs=[tmp_path]
    )
    r = await make_client(settings=settings).get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "org/model"
    listed = {m["model_id"]: m for m in body["models"]}
    assert list(listed)[0] == "org/model"  # the default first
    assert listed["org/model"]["sources"] == ["default", "preload"]
    assert listed["imagine/shapes"]["sources"] == ["preload", "builtin"]
    assert listed["acme/painter"]["sources"] == ["model_dir"]
    assert listed["acme/sketcher"]["sources"] == ["model_dir"]
    # state as the engine reports it; ids it has never seen are unloaded
    assert listed["org/model"]["state"] == "ready"
    assert listed["acme/painter"]["state"] == "unloaded"


async def test_models_needs_the_token_when_tokens_are_on(make_client: MakeClient) -> None:
    client = make_client(settings=Settings(preload=[], tokens=["t0k"]))
    r = await client.get("/models")
    assert r.status_code == 401 and "error" in r.json()
    assert r.headers["www-authenticate"] == "Bearer"
    ok = await client.get("/models", headers={"authorization": "Bearer t0k"})
    assert ok.status_code == 200


async def test_info_names_the_size_presets_and_the_render_size(client: httpx.AsyncClient) -> None:
    info = (await client.get("/models/org/model/info")).json()
    defaults, limits = info["defaults"], info["limits"]
    assert info["size_presets"][0] == {"width": defaults["width"], "height": defaults["height"]}
    for size in info["size_presets"]:
        assert size["width"] % limits["size_multiple"] == 0
        assert size["width"] * size["height"] <= limits["max_pixels"]
    assert info["render_size"] is None  # the fake family draws at the size asked for
    assert limits["max_outputs"] >= 1


async def test_the_root_is_the_page_for_a_browser_only(make_client: MakeClient) -> None:
    client = make_client(settings=Settings(preload=[], tokens=["t0k"]))
    page = await client.get("/", headers=BROWSER)  # no token: the page holds no data
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for accept in ("*/*", "application/json"):
        assert (await client.get("/", headers={"accept": accept})).status_code == 401
    status = await client.get("/", headers={"authorization": "Bearer t0k"})
    assert status.json()["task"] == "text-to-image"
    # every file the page names, and every module those import, is served (without a token)
    wanted = re.findall(r'(?:src|href)="page/([^"]+)"', page.text)
    served: set[str] = set()
    while wanted:
        name = wanted.pop()
        r = await client.get(f"/page/{name}")
        assert r.status_code == 200, name
        served.add(name)
        wanted += [m for m in re.findall(r'from "\./([^"]+)"', r.text) if m not in served]
    assert {"app.js", "api.js", "store.js", "style.css", "icon.svg"} <= served
    assert (await client.get("/page/nope.js")).status_code == 404
    assert (await client.get("/page/index.html")).status_code == 404  # the page lives at /
