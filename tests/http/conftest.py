"""Route-test fixtures: a fake engine, settings, and an httpx client on the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.fakes import FakeEngine


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings() -> Settings:
    return Settings(default_model="imagine/shapes", preload=[])


MakeClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(
    engine: FakeEngine, settings: Settings
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def make(*, cache: Any = None, settings: Settings = settings) -> httpx.AsyncClient:
        app = create_app(settings, engine, cache)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: MakeClient) -> httpx.AsyncClient:
    return make_client()
