"""Fixtures for engine tests: an Engine over the FakeManager, closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from imagine.engine.engine import Engine
from imagine.settings import Settings
from tests.engine.fake_manager import FakeManager

EngineFactory = Callable[..., tuple[Engine, FakeManager]]


@pytest.fixture
async def make_engine() -> AsyncIterator[EngineFactory]:
    engines: list[Engine] = []

    def factory(manager: FakeManager | None = None, **overrides: Any) -> tuple[Engine, FakeManager]:
        values: dict[str, Any] = {
            "preload": [],
            "batch_wait_ms": 0.0,
            "max_request_s": 0,
            **overrides,
        }
        settings = Settings(**values)
        fake = manager if manager is not None else FakeManager()
        engine = Engine(settings=settings, manager=fake)
        engines.append(engine)
        return engine, fake

    yield factory
    for engine in engines:
        await engine.close()
