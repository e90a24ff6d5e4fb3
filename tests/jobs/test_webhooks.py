"""Webhook delivery against a real HTTP receiver on 127.0.0.1 (uvicorn in a thread).

The receiver records every request and can be told to answer the first K with a given status.
Tests synchronise with `sender.flush(...)`, never with sleeps. Nothing here sends traffic to any
address but 127.0.0.1: the refused-target tests only call `check_target`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from imagine.errors import InvalidRequest
from imagine.jobs.webhooks import (
    EVENTS,
    WebhookSender,
    check_events,
    check_target,
    sign,
    verify,
)
from tests.http.live import serve

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    base: str = ""
    hits: list[Hit] = field(default_factory=list)
    fail_first: int = 0  # answer this many requests with `fail_status` before succeeding
    fail_status: int = 500
    delay_s: float = 0.0  # how long to stall each answer (for the read-timeout test)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.fail_first, self.fail_status, self.delay_s = 0, 500, 0.0


@pytest.fixture(scope="module")
def server() -> Iterator[Receiver]:
    rec = Receiver()
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/hook/{name}")
    async def hook(name: str, request: Request) -> Response:
        body = await request.body()
        with rec.lock:
            rec.hits.append(Hit(name, dict(request.headers), body))
            status = rec.fail_status if rec.fail_first > 0 else 204
            rec.fail_first -= 1
            delay = rec.delay_s
        if delay:
            await asyncio.sleep(delay)  # the receiver being slow, not test synchronisation
        return Response(status_code=status)

    with serve(app) as base:
        rec.base = base
        yield rec


@pytest.fixture
def receiver(server: Receiver) -> Receiver:
    server.reset()
    return server


@pytest.fixture
def outcomes() -> list[str]:
    return []


@pytest.fixture
async def sender(outcomes: list[str]) -> AsyncIterator[WebhookSender]:
    s = WebhookSender(
        secret=SECRET,
        allow=["127.0.0.0/8", "::1", "localhost"],
        timeout_s=2.0,
        retries=3,
        backoff_s=0.01,
        backoff_max_s=0.05,
        throttle_s=0.3,
        on_outcome=outcomes.append,
    )
    await s.start()
    yield s
    await s.close()


def payload(job: str, status: str, n: int = 0) -> dict:
    return {"id": job, "status": status, "output": [f"img-{n}"], "logs": f"step {n}"}


def send(s: WebhookSender, url: str, job: str, event: str, n: int = 0) -> None:
    status = {"start": "starting", "completed": "succeeded"}.get(event, "processing")
    s.send(job, url, event, payload(job, status, n), EVENTS)


async def test_start_and_completed_in_order_signed(sender, receiver, outcomes) -> None:
    url = f"{receiver.base}/hook/a?token=t0ps3cret"
    send(sender, url, "job-a", "start")
    send(sender, url, "job-a", "completed")
    assert await sender.flush(10)
    assert [h.json["status"] for h in receiver.hits] == ["starting", "succeeded"]
    assert outcomes == ["delivered", "delivered"]
    for hit in receiver.hits:
        assert hit.headers["content-type"] == "application/json"
        assert hit.headers["webhook-id"].startswith("msg_")
        assert int(hit.headers["webhook-timestamp"]) > 0
        assert hit.headers["webhook-signature"].startswith("v1,")
        assert verify(SECRET, hit.headers, hit.body)
        assert not verify(SECRET, hit.headers, hit.body.replace(b"img-", b"IMG-"))
        assert not verify(SECRET, hit.headers, hit.body + b" ")
        assert not verify(OTHER, hit.headers, hit.body)
    assert receiver.hits[0].headers["webhook-id"] != receiver.hits[1].headers["webhook-id"]


def test_sign_and_verify_edges() -> None:
    body = b'{"id":"x"}'
    sig = sign(SECRET, "msg_1", 1_700_000_000, body)
    assert sig.startswith("v1,") and len(base64.b64decode(sig[3:])) == 32
    assert sig == sign(SECRET.removeprefix("whsec_"), "msg_1", 1_700_000_000, body)
    now = int(time.time())
    good = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(now)}
    good["Webhook-Signature"] = "v1,bogus " + sign(SECRET, "msg_1", now, body)
    assert verify(SECRET, good, body)  # case-insensitive names, any listed signature
    assert verify(SECRET, good, body.decode())
    stale = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": sig}
    assert not verify(SECRET, stale, body)  # a replay from long ago
    assert not verify(SECRET, {"webhook-id": "msg_1"}, body)
    with pytest.raises(ValueError):
        sign("whsec_not base64!", "m", 1, body)


async def test_no_secret_no_signature(receiver) -> None:
    s = WebhookSender(secret=None, allow=["127.0.0.1/32"])
    await s.start()
    try:
        send(s, f"{receiver.base}/hook/n", "job-n", "start")
        assert await s.flush(10)
    finally:
        await s.close()
    assert len(receiver.hits) == 1 and "webhook-signature" not in receiver.hits[0].headers
    assert receiver.hits[0].headers["webhook-id"]


async def test_retried_until_success_with_same_id(sender, receiver, outcomes) -> None:
    receiver.fail_first = 2
    send(sender, f"{receiver.base}/hook/r", "job-r", "completed")
    assert await sender.flush(10)
    assert len(receiver.hits) == 3
    assert len({h.headers["webhook-id"] for h in receiver.hits}) == 1
    assert all(verify(SECRET, h.headers, h.body) for h in receiver.hits)
    assert outcomes == ["retried", "retried", "delivered"]


async def test_429_is_retried(sender, receiver, outcomes) -> None:
    receiver.fail_first, receiver.fail_status = 1, 429
    send(sender, f"{receiver.base}/hook/t", "job-t", "start")
    assert await sender.flush(10)
    assert len(receiver.hits) == 2 and outcomes == ["retried", "delivered"]


async def test_400_is_not_retried(sender, receiver, outcomes, caplog) -> None:
    receiver.fail_first, receiver.fail_status = 100, 400
    caplog.set_level(logging.DEBUG, logger="imagine.jobs.webhooks")
    send(sender, f"{receiver.base}/hook/b?token=t0ps3cret", "job-b", "start")
    assert await sender.flush(10)
    assert len(receiver.hits) == 1 and outcomes == ["failed"]
    assert "/hook/b" in caplog.text and "HTTP 400" in caplog.text  # logged, but redacted:
    assert "t0ps3cret" not in caplog.text and SECRET.removeprefix("whsec_") not in caplog.text


async def test_retries_are_bounded(sender, receiver, outcomes) -> None:
    receiver.fail_first = 100
    send(sender, f"{receiver.base}/hook/f", "job-f", "completed")
    assert await sender.flush(10)
    assert len(receiver.hits) == 1 + 3
    assert outcomes == ["retried"] * 3 + ["failed"]


async def test_connection_refused_is_retried_then_fails(sender, outcomes) -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    send(sender, f"http://127.0.0.1:{port}/hook", "job-c", "start")
    assert await sender.flush(10)
    assert outcomes == ["retried"] * 3 + ["failed"]


async def test_read_timeout_gives_up(receiver) -> None:
    outcomes: list[str] = []
    s = WebhookSender(
        secret=SECRET,
        allow=["127.0.0.1/32"],
        timeout_s=0.1,
        retries=0,
        on_outcome=outcomes.append,
    )
    await s.start()
    receiver.delay_s = 0.5
    try:
        send(s, f"{receiver.base}/hook/slow", "job-s", "start")
        assert await s.flush(10)
    finally:
        await s.close()
    assert len(receiver.hits) == 1 and outcomes == ["failed"]


async def test_throttle_coalesces_a_burst(sender, receiver) -> None:
    url = f"{receiver.base}/hook/o"
    for n in range(10):
        send(sender, url, "job-o", "output", n)
    assert await sender.flush(10)
    # The first at once, then one message with the latest payload when the window opens.
    assert [h.json["output"] for h in receiver.hits] == [["img-0"], ["img-9"]]


async def test_throttle_is_per_job(sender, receiver) -> None:
    url = f"{receiver.base}/hook/p"
    for job in ("job-p1", "job-p2"):
        send(sender, url, job, "output", 1)
    assert await sender.flush(10)
    assert sorted(h.json["id"] for h in receiver.hits) == ["job-p1", "job-p2"]


async def test_completed_is_last_after_a_burst(sender, receiver) -> None:
    url = f"{receiver.base}/hook/c"
    send(sender, url, "job-c", "start")
    for n in range(10):
        send(sender, url, "job-c", "logs" if n % 2 else "output", n)
    send(sender, url, "job-c", "completed", 99)
    send(sender, url, "job-c", "output", 100)  # late: after completed, ignored
    assert await sender.flush(10)
    # The first output goes at once; the coalesced rest is superseded by the final payload.
    statuses = [h.json["status"] for h in receiver.hits]
    assert statuses == ["starting", "processing", "succeeded"]
    assert receiver.hits[-1].json["output"] == ["img-99"]


async def test_events_outside_the_filter_are_not_sent(sender, receiver) -> None:
    url = f"{receiver.base}/hook/x"
    only = check_events(["completed"])
    for event in ("start", "output", "logs", "completed"):
        sender.send("job-x", url, event, payload("job-x", event), only)
    assert await sender.flush(10)
    assert [h.json["status"] for h in receiver.hits] == ["completed"]


async def test_send_from_another_thread(sender, receiver) -> None:
    url = f"{receiver.base}/hook/th"
    await asyncio.to_thread(send, sender, url, "job-th", "start")
    assert await sender.flush(10)
    assert len(receiver.hits) == 1


async def test_overflow_drops_oldest_but_never_completed(receiver) -> None:
    outcomes: list[str] = []
    s = WebhookSender(
        secret=None, allow=["127.0.0.1/32"], max_pending=2, on_outcome=outcomes.append
    )
    await s.start()
    url = f"{receiver.base}/hook/q"
    try:
        # send() is synchronous, so nothing is delivered before all five are queued.
        for n in range(5):
            send(s, url, f"job-q{n}", "start", n)
        assert outcomes == ["dropped"] * 3
        send(s, url, "job-q0", "completed")
        send(s, url, "job-q1", "completed")
        assert outcomes == ["dropped"] * 5  # the two starts made way for the completeds
        send(s, url, "job-q2", "completed")  # over the bound, but completed is never dropped
        assert outcomes == ["dropped"] * 5
        assert await s.flush(10)
    finally:
        await s.close()
    assert sorted(h.json["id"] for h in receiver.hits) == ["job-q0", "job-q1", "job-q2"]
    assert outcomes == ["dropped"] * 5 + ["delivered"] * 3


async def test_close_counts_undelivered_as_dropped(receiver) -> None:
    outcomes: list[str] = []
    s = WebhookSender(secret=None, allow=["127.0.0.1/32"], on_outcome=outcomes.append)
    await s.start()
    url = f"{receiver.base}/hook/z"
    send(s, url, "job-z", "output", 1)
    send(s, url, "job-z", "output", 2)  # held by the throttle
    await s.close()  # before the worker ever ran: the queued one and the held one are dropped
    assert outcomes == ["dropped", "dropped"]


async def test_send_requires_start_and_known_event() -> None:
    s = WebhookSender(secret=None, allow=["127.0.0.1/32"])
    with pytest.raises(RuntimeError):
        s.send("j", "http://127.0.0.1:9/", "start", {}, EVENTS)
    await s.start()
    with pytest.raises(ValueError):
        s.send("j", "http://127.0.0.1:9/", "finished", {}, EVENTS)
    await s.close()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]:8000/"]
)
def test_check_target_accepts_loopback(url: str) -> None:
    check_target(url, ["127.0.0.0/8", "::1", "localhost"])


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://example.com/",
        "ftp://127.0.0.1/",
        "not a url",
        "",
        "http:///x",
        "http://127.0.0.1@example.com/",
        "http://localhost.example.com/",
        "http://127.0.0.1:99999/",
    ],
)
def test_check_target_refuses(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_target(url, ["127.0.0.0/8", "::1", "localhost"])
    assert info.value.field == "webhook" and "webhook" in info.value.message


def test_check_target_message_lists_the_allow_list() -> None:
    with pytest.raises(InvalidRequest, match=r"127\.0\.0\.0/8, ::1, localhost"):
        check_target("https://example.com/hook?token=x", ["127.0.0.0/8", "::1", "localhost"])


def test_check_target_custom_allow_list() -> None:
    allow = ["hooks.internal", "192.168.0.0/16"]
    check_target("https://hooks.internal/cb?x=1", allow)
    check_target("https://HOOKS.internal:8443/cb", allow)
    check_target("http://192.168.3.4:8080/cb", allow)
    for url in ("http://127.0.0.1/", "http://sub.hooks.internal/", "http://192.169.0.1/"):
        with pytest.raises(InvalidRequest):
            check_target(url, allow)


def test_check_events() -> None:
    assert check_events(None) == list(EVENTS)
    assert check_events([]) == list(EVENTS)
    assert check_events(["completed", "start", "start"]) == ["start", "completed"]
    for bad in (["start", "done"], "start"):
        with pytest.raises(InvalidRequest) as info:
            check_events(bad)
        assert info.value.field == "webhook_events_filter"
        assert "start, output, logs, completed" in info.value.message


async def test_injected_client_is_used_and_left_open() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))  # no network at all
    s = WebhookSender(secret=SECRET, allow=["localhost"], client=client)
    await s.start()
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    s.send("job-i", "http://localhost/cb", "start", {"created_at": when}, EVENTS)
    assert await s.flush(10)
    await s.close()
    assert not client.is_closed
    await client.aclose()
    assert json.loads(seen[0].content) == {"created_at": "2024-05-01T12:00:00+00:00"}
    assert verify(SECRET, seen[0].headers, seen[0].content)
