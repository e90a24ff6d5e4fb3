"""What a model replica does, in a plain class (Serve's decorators raise outside a replica).

A replica hosts a few models (Serve's `@serve.multiplexed` decides which: its LRU of model ids
per replica is what routes each request to a replica that has its model). Each hosted model
gets imagine's own `Engine` over one shared `ModelManager`, so admission, batching, the cost
model, previews and cancellation are exactly the single server's; when Serve evicts a model,
its engine closes and the manager unloads its pipeline.

    load(model_id)  → HostedModel (its engine, loaded and calibrated)
    stream(model, request, …) → JobSnapshot … then Finished(result) or Failed(error)
        (the stream's consumer cancelling it cancels the engine Job)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from imagine.engine.engine import Engine
from imagine.engine.job import PreviewPolicy
from imagine.errors import ImagineError
from imagine.metrics import Metrics
from imagine.ray_serve.events import Finished, ReplicaEvent, error_to_wire
from imagine.request import GenerationRequest
from imagine.settings import Settings

__all__ = ["HostedModel", "ModelHost"]

log = logging.getLogger(__name__)


class HostedModel:
    """One model loaded in this replica, with its own engine. Serve's multiplexer calls
    `__del__` when it evicts the model: the engine closes and the pipeline is unloaded."""

    def __init__(self, model_id: str, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.model_id = model_id
        self.engine = engine
        self._loop = loop
        self._closed = threading.Event()

    async def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            log.info("unloading %s from this replica", self.model_id)
            await self.engine.close()

    def __del__(self) -> None:
        # Serve runs a synchronous __del__ on an executor thread and waits for it; garbage
        # collection may run it again (anywhere): only the first call closes.
        if self._closed.is_set() or not self._loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self.close(), self._loop)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if not on_loop:  # waiting on the loop's own thread would deadlock it
            with contextlib.suppress(Exception):
                future.result(timeout=60)


class ModelHost:
    """The models of one replica and the event stream of each request run on them."""

    def __init__(self, *, settings: Settings, replica: str = "local", manager: Any = None) -> None:
        # Models load when Serve routes a request for them here, never at start.
        self._settings = settings.model_copy(update={"preload": []})
        if manager is None:
            from imagine.models.manager import ModelManager  # torch: only in the replica

            manager = ModelManager(settings=self._settings)
        self._manager = manager
        self.replica = replica
        self.hosted: dict[str, HostedModel] = {}

    async def load(self, model_id: str) -> HostedModel:
        """Load `model_id` into an engine of its own; raises ModelNotFound, ModelLoadFailed."""
        engine = Engine(settings=self._settings, manager=self._manager, metrics=Metrics())
        try:
            await engine.load(model_id)
        except BaseException:
            await engine.close()
            raise
        model = HostedModel(model_id, engine, asyncio.get_running_loop())
        self.hosted[model_id] = model
        return model

    def loaded(self) -> list[str]:
        """The ids of the models this replica holds now."""
        self.hosted = {k: m for k, m in self.hosted.items() if not m._closed.is_set()}
        return sorted(self.hosted)

    async def stream(
        self,
        model: HostedModel,
        request: GenerationRequest,
        *,
        client_id: str,
        previews: PreviewPolicy | None,
        job_id: str | None,
        force: bool,
    ) -> AsyncIterator[ReplicaEvent]:
        """Admit `request` to the model's engine and yield its events; the last one is
        Finished or Failed. Closing or cancelling the iterator cancels the job."""
        try:
            job = model.engine.submit(
                request,
                client_id=client_id,
                wait_for_model=True,
                previews=previews,
                job_id=job_id,
                force=force,
            )
        except ImagineError as exc:
            yield error_to_wire(exc)
            return
        try:
            async for snap in job.events():
                if snap.state.terminal:
                    break
                yield snap
            try:
                result = await job.wait()
            except Exception as exc:
                yield error_to_wire(exc)
                return
            yield Finished(result=result, replica=self.replica)
        finally:
            job.cancel()  # a no-op once settled; else the consumer has gone

    def busy(self) -> int:
        """Requests queued or running on this replica's models now."""
        total = 0
        for model in self.hosted.values():
            for entry in model.engine.health()["models"].values():
                total += entry["queued"] + entry["running"]
        return total

    def health(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "models": {k: m.engine.health()["models"] for k, m in self.hosted.items()},
        }
