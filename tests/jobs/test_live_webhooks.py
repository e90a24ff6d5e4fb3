"""Webhooks end to end: a live imagine server (real engine, imagine/shapes) POSTs each job's
prediction to a live receiver on loopback; signatures verify; a receiver that fails twice gets
the third try; a target outside the allow-list is refused when the job is created."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.jobs.webhooks import verify
from imagine.settings import Settings
from tests.http.live import serve
from tests.jobs.live import MODEL, poll

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"imagine-test-webhook-secret-32by").decode()


@dataclass
class Receiver:
    """Records every delivery; the first `fail_first` POSTs to /flaky answer 500."""

    fail_first: int = 2
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")  # tests.http.live.serve waits for it
        async def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.post("/{path}")
        async def hook(path: str, request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.seen.append((path, dict(request.headers), body))
                flaky_tries = sum(1 for p, _, _ in self.seen if p == "flaky")
            if path == "flaky" and flaky_tries <= self.fail_first:
                return Response(status_code=500)
            return Response(status_code=204)

        return app

    def events(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for p, _, b in self.seen if p == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with serve(rec.app()) as url:
        yield rec, url


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL], webhook_secret=SECRET, batch_wait_ms=0.0)
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def _create(base_url: str, hook: str, **extra: Any) -> dict[str, Any]:
    body = {"input": {"prompt": "a red circle", "seed": 1}, "webhook": hook, **extra}
    r = httpx.post(f"{base_url}/v1/models/{MODEL}/predictions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_start_and_completed_for_each_job_signed(
    base_url: str, receiver: tuple[Receiver, str]
) -> None:
    rec, hook_base = receiver
    filt = {"webhook_events_filter": ["start", "completed"]}
    jobs = [_create(base_url, f"{hook_base}/signed", **filt) for _ in range(3)]
    ids = {j["id"] for j in jobs}

    def all_completed() -> bool | None:
        done = {e["id"] for e in rec.events("signed") if e["status"] == "succeeded"}
        return True if done >= ids else None

    poll(all_completed, "a completed webhook for every job")
    with rec.lock:
        deliveries = [(h, b) for p, h, b in rec.seen if p == "signed"]
    for headers, body in deliveries:
        assert verify(SECRET, headers, body)
        assert not verify(SECRET, headers, body[:-1] + b" }")  # one byte changed
    for job_id in ids:
        statuses = [e["status"] for e in rec.events("signed") if e["id"] == job_id]
        assert statuses[0] in ("starting", "processing") and statuses[-1] == "succeeded"
        assert len(statuses) == 2  # start and completed only: the filter holds
        final = next(e for e in rec.events("signed") if e["id"] == job_id and e["output"])
        assert httpx.get(final["output"]).headers["content-type"] == "image/png"


def test_a_receiver_that_fails_twice_gets_the_third_try(
    base_url: str, receiver: tuple[Receiver, str]
) -> None:
    rec, hook_base = receiver
    job = _create(base_url, f"{hook_base}/flaky", webhook_events_filter=["completed"])

    def delivered() -> bool | None:
        with rec.lock:
            tries = [h for p, h, _ in rec.seen if p == "flaky"]
        return True if len(tries) >= 3 else None

    poll(delivered, "the third delivery attempt")
    with rec.lock:
        tries = [(h, json.loads(b)) for p, h, b in rec.seen if p == "flaky"]
    assert len(tries) == 3
    assert len({h["webhook-id"] for h, _ in tries}) == 1  # one message, retried
    assert all(body["id"] == job["id"] and body["status"] == "succeeded" for _, body in tries)


def test_a_target_outside_the_allow_list_is_refused_at_create(base_url: str) -> None:
    before = [p["id"] for p in httpx.get(f"{base_url}/v1/predictions").json()["results"]]
    for target in ("http://10.0.0.1/hook", "http://example.com/hook", "ftp://127.0.0.1/x"):
        r = httpx.post(
            f"{base_url}/v1/models/{MODEL}/predictions",
            json={"input": {"prompt": "a red circle"}, "webhook": target},
        )
        assert r.status_code == 400
        assert r.json()["invalid_fields"][0]["field"] == "webhook"
    after = [p["id"] for p in httpx.get(f"{base_url}/v1/predictions").json()["results"]]
    assert after == before  # nothing was accepted
