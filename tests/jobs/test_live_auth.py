"""With tokens on, a job belongs to its token: another token gets 404 for it and never sees it
listed; no token is a 401 in the problem shape; result files need no token (the id is the key).
Bad input on the routes that read jobs gets the problem shape too."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve
from tests.jobs.live import MODEL

pytestmark = pytest.mark.slow

ALICE = {"authorization": "Bearer alice-token"}
BOB = {"authorization": "Bearer bob-token"}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL], tokens=["alice-token", "bob-token"])
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def test_a_job_is_visible_to_its_token_only(base_url: str) -> None:
    created = httpx.post(
        f"{base_url}/v1/models/{MODEL}/predictions",
        json={"input": {"prompt": "a red circle"}},
        headers={**ALICE, "prefer": "wait"},
        timeout=70,
    ).json()
    job_url = created["urls"]["get"]
    assert httpx.get(job_url, headers=ALICE).json()["status"] == "succeeded"
    for path in ("", "/events", "/stream", "/preview"):
        r = httpx.get(job_url + path, headers=BOB)
        assert r.status_code == 404 and r.json()["code"] == "job_not_found", path
    r = httpx.post(job_url + "/cancel", headers=BOB)
    assert r.status_code == 404
    assert created["id"] in [
        p["id"] for p in httpx.get(f"{base_url}/v1/predictions", headers=ALICE).json()["results"]
    ]
    assert created["id"] not in [
        p["id"] for p in httpx.get(f"{base_url}/v1/predictions", headers=BOB).json()["results"]
    ]
    r = httpx.get(job_url)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(created["output"]).status_code == 200  # the file URL needs no token


def test_bad_input_on_the_reading_routes(base_url: str) -> None:
    r = httpx.get(f"{base_url}/v1/predictions", params={"cursor": "garbage"}, headers=ALICE)
    assert r.status_code == 400 and r.json()["invalid_fields"][0]["field"] == "cursor"
    for path in (
        "/v1/predictions/nope/events",
        "/v1/predictions/nope/stream",
        "/v1/files/nope/0.png",
    ):
        r = httpx.get(base_url + path, headers=ALICE)
        assert r.status_code == 404 and set(r.json()) >= {"title", "detail", "status"}, path
    r = httpx.post(f"{base_url}/v1/models/{MODEL}/predictions", json={"input": {"prompt": "x"}})
    assert r.status_code == 401 and r.json()["status"] == 401
