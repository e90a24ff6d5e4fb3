"""ImageService.describe awaits Hub lookups without holding a worker thread: with anyio's pool
cut to ONE thread and five lookups stuck on the Hub, a local model still describes and
validates at once. The engine is the route tests' fake; the lookups are the real HubLookups."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anyio.to_thread

from imagine.errors import ModelNotFound
from imagine.models.hub import HubLookups, HubStatus
from imagine.models.spec import ModelInfo
from imagine.service import ImageService
from imagine.settings import Settings
from tests.http.fakes import FAKE_SPEC, FakeEngine


class HubEngine(FakeEngine):
    """Knows `models` locally; anything else is a Hub lookup whose work waits for `hub_gate`."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        super().__init__()
        self.hub = HubLookups(settings=settings, status=HubStatus())
        self.hub_gate = threading.Event()
        self.hub_calls = 0
        self._folder = folder

    def _work(self) -> str:
        self.hub_calls += 1
        assert self.hub_gate.wait(timeout=30)
        return str(self._folder)

    def describe(self, model_id: str) -> ModelInfo:
        if model_id in self.models:
            return super().describe(model_id)
        if self.hub.lookup(model_id, self._work).folder is None:
            raise ModelNotFound(model_id)
        return ModelInfo(model_id=model_id, spec=FAKE_SPEC, revision="hub", state="unloaded")


async def test_local_models_resolve_while_hub_lookups_wait(tmp_path: Path) -> None:
    settings = Settings(preload=[])
    engine = HubEngine(settings, tmp_path)
    service = ImageService(settings=settings, engine=engine)  # type: ignore[arg-type]
    anyio.to_thread.current_default_thread_limiter().total_tokens = 1  # this loop's pool only

    remote = [asyncio.ensure_future(service.describe(f"hub/x-{i}")) for i in range(5)]
    async with asyncio.timeout(10):
        while engine.hub_calls < settings.hub_lookup_threads:  # the rest queue in the Hub pool
            await asyncio.sleep(0.01)
        local = await service.describe("org/model")
        request = await service.validate("org/model", "a red circle", {"seed": 1})
    assert local.revision == "rev1" and request.model_id == "org/model"
    assert not any(task.done() for task in remote)

    engine.hub_gate.set()
    async with asyncio.timeout(10):
        infos = await asyncio.gather(*remote)
    assert [i.revision for i in infos] == ["hub"] * 5 and engine.hub_calls == 5
