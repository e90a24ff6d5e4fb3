"""Every error status with its exact body: 400 / 401 / 404 / 405 / 429 / 500 / 503, never 422."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI

from imagine.errors import (
    GenerationFailed,
    ModelLoadFailed,
    ModelLoading,
    Overloaded,
)
from imagine.http.app import create_app
from imagine.metrics import Metrics
from imagine.settings import Settings, hash_token
from tests.http.fakes import FakeEngine

TOKEN = "s3cret-token-value"


@pytest.mark.parametrize(
    ("content", "headers", "needle"),
    [
        (b'{"inputs": "x", ', {"content-type": "application/json"}, "body: not valid JSON"),
        (b"not json", {"content-type": "application/json"}, "body: not valid JSON"),
        (b'{"parameters": {}}', {}, "inputs: required"),
        (b'{"inputs": 3}', {}, "inputs: expected a string, got a number"),
        (b'{"inputs": ""}', {}, "inputs: "),
        (b"[1, 2]", {"content-type": "application/json"}, "body: expected a JSON object"),
        (b'{"inputs": "x", "parameters": [1]}', {}, "parameters: expected an object"),
        (b'{"inputs": "x", "parameters": {"negative_prompt": 5}}', {}, "negative_prompt"),
        (b'{"inputs": "x", "parameters": {"target_size": 5}}', {}, "target_size"),
        (b'{"inputs": "x", "options": {"use_cache": "no"}}', {}, "options.use_cache"),
        (b'{"inputs": "x"}', {"x-wait-for-model": "maybe"}, "x-wait-for-model"),
        (b'{"inputs": "x", "parameters": {"width": "wide"}}', {}, "width"),
        (b'{"inputs": "x", "parameters": {"scheduler": "Nope"}}', {}, "DDIMScheduler"),
        (b"\xff\xfe", {}, "UTF-8"),
        (b'{"inputs": "a \\ud800 cat"}', {}, "inputs is not valid Unicode: a lone surrogate"),
        (b'{"inputs": "a \\u0000 cat"}', {}, "inputs contains a NUL character"),
    ],
)
async def test_400_names_the_field(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], needle: str
) -> None:
    r = await client.post("/models/org/model", content=content, headers=headers)
    assert r.status_code == 400, r.text
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert needle in body["error"]


async def test_fastapi_validation_errors_become_400_never_422(engine: FakeEngine) -> None:
    app: FastAPI = create_app(Settings(), engine)

    @app.get("/typed")
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.get("/typed", params={"n": "abc"})
    assert r.status_code == 400
    assert list(r.json()) == ["error"] and "n" in r.json()["error"]


async def test_401_when_tokens_configured(make_client, engine: FakeEngine, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    client = make_client(settings=Settings(token_hashes=[hash_token(TOKEN)]))
    missing = await client.post("/models/org/model", json={"inputs": "x"})
    wrong = await client.post(
        "/models/org/model", json={"inputs": "x"}, headers={"authorization": "Bearer wrong-one"}
    )
    basic = await client.post(
        "/models/org/model", json={"inputs": "x"}, headers={"authorization": f"Basic {TOKEN}"}
    )
    info = await client.get("/models/org/model/info")
    for r in (missing, wrong, basic, info):
        assert r.status_code == 401
        assert list(r.json()) == ["error"] and isinstance(r.json()["error"], str)
        assert r.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in r.text
    assert not engine.calls
    ok = await client.post(
        "/models/org/model", json={"inputs": "x"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ok.status_code == 200
    assert engine.calls[0].client_id == hash_token(TOKEN)
    assert (await client.get("/health")).status_code == 200  # liveness needs no token
    assert TOKEN not in caplog.text and "wrong-one" not in caplog.text


async def test_404_unknown_model_and_route(client: httpx.AsyncClient) -> None:
    r = await client.post("/models/nobody/nothing", json={"inputs": "x"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'nobody/nothing' not found"}
    assert (await client.get("/models/nobody/nothing")).status_code == 404
    assert (await client.get("/models/nobody/nothing/info")).status_code == 404
    route = await client.get("/no/such/route")
    assert route.status_code == 404 and list(route.json()) == ["error"]


async def test_405_is_json(client: httpx.AsyncClient) -> None:
    r = await client.put("/models/org/model", json={"inputs": "x"})
    assert r.status_code == 405 and list(r.json()) == ["error"]


async def test_429_with_retry_after(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    engine.error = Overloaded("queue for org/model is full (64 waiting)", retry_after=2.2)
    r = await client.post("/models/org/model", json={"inputs": "x"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json() == {"error": "queue for org/model is full (64 waiting)"}


async def test_503_with_estimated_time(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    engine.error = ModelLoading("org/model", estimated_time=12.5)
    r = await client.post("/models/org/model", json={"inputs": "x"})
    assert r.status_code == 503
    assert r.json() == {"error": "Model org/model is currently loading", "estimated_time": 12.5}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (GenerationFailed("generation failed: out of memory"), "generation failed: out of memory"),
        (ModelLoadFailed("could not load org/model: missing unet"), "could not load org/model"),
        (RuntimeError("Traceback (most recent call last): secret internals"), "internal server"),
        (ValueError("a diffusers ValueError after validation is our bug"), "internal server"),
    ],
)
async def test_500_without_traceback(
    client: httpx.AsyncClient, engine: FakeEngine, error: Exception, expected: str, caplog
) -> None:  # type: ignore[no-untyped-def]
    engine.error = error
    r = await client.post("/models/org/model", json={"inputs": "x"}, headers={"x-request-id": "r1"})
    assert r.status_code == 500
    body = r.json()
    assert list(body) == ["error"] and expected in body["error"]
    assert "Traceback" not in r.text and "secret internals" not in r.text
    assert r.headers["x-request-id"] == "r1"


async def test_client_disconnect_cancels_generation(engine: FakeEngine) -> None:
    """Drive the ASGI app by hand: the body, then the peer goes away while generating."""
    engine.gate = asyncio.Event()
    engine.metrics = Metrics()
    app = create_app(Settings(), engine)
    generating = asyncio.Event()
    original = engine.generate

    async def tracked(*args, **kwargs):  # type: ignore[no-untyped-def]
        generating.set()
        return await original(*args, **kwargs)

    engine.generate = tracked  # type: ignore[method-assign]
    messages = [{"type": "http.request", "body": b'{"inputs": "x"}', "more_body": False}]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop(0)
        await generating.wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/models/org/model",
        "raw_path": b"/models/org/model",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    assert engine.cancelled == 1
    counted = {"model": "org/model", "status": "499"}
    assert engine.metrics.registry.get_sample_value("imagine_requests_total", counted) == 1.0
