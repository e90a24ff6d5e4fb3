"""Over HTTP, with the real engine and model manager: a client cannot make the server load a
folder by its filesystem path unless the operator turned path ids on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pipeline folder (resolving needs only its index), with "/" as the working directory,
    so an absolute path with its leading slash stripped still names it."""
    folder = tmp_path / "secret" / "model"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    monkeypatch.chdir("/")
    return folder


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    made: list[httpx.AsyncClient] = []

    def make(**settings: object) -> httpx.AsyncClient:
        full = Settings(preload=[], allow_downloads=False, device="cpu", **settings)  # type: ignore[arg-type]
        app = create_app(full, build_engine(full))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        made.append(httpx.AsyncClient(transport=transport, base_url="http://test"))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


async def test_path_ids_are_refused_by_default(folder: Path, client: Client) -> None:
    http = client()
    body = {"inputs": "a red cube"}
    for url in (
        f"/models/{folder}",  # //tmp/...: the leading slash is stripped, then relative to "/"
        f"/models/%2E{folder}",  # ./tmp/... (encoded: clients drop a plain "./")
        "/models/%2E%2E/%2E%2E/etc",  # ../../etc, encoded so no client normalises it away
        "/models/~/models/sd",
    ):
        response = await http.post(url, json=body)
        assert response.status_code == 404, (url, response.text)
        assert "allow_path_model_ids" in response.json()["error"], url
    info = await http.get(f"/models/%2E{folder}/info")
    assert info.status_code == 404 and "path model ids are disabled" in info.json()["error"]


async def test_path_ids_work_when_enabled(folder: Path, client: Client) -> None:
    http = client(allow_path_model_ids=True)
    for url in (f"/models/{folder}/info", f"/models/%2E{folder}/info"):
        response = await http.get(url)
        assert response.status_code == 200, (url, response.text)
        assert response.json()["family"] == "sd"
