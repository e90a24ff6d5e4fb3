"""Which models are resident: loading, the worker of each loaded model, and LRU eviction.

All loads and evictions run under one asyncio lock, so memory accounting never races (two loads
cannot both claim the same free room) and a model is never unloaded while it is being loaded.
The budget (`settings.memory_budget_bytes`, 0 = none) counts each loaded model's bytes as
the manager measured them at load time (`LoadedModel.memory_bytes`, read by
`ports.model_bytes`); before a load, room is made for the size measured the previous time this
model was loaded, and after it for the actual size. Only idle models (no running batch, nothing
queued) are evicted, least recently used first; if every other model is busy the budget is
exceeded until one goes idle.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial

from imagine.engine.admission import RequestQueue
from imagine.engine.cost import Calibration
from imagine.engine.ports import ManagerPort, model_bytes, model_revision, stepper_of
from imagine.engine.step_worker import StepWorker
from imagine.engine.worker import Worker
from imagine.errors import GenerationFailed, ImagineError, ModelLoadFailed
from imagine.metrics import Metrics
from imagine.models.spec import FamilySpec
from imagine.settings import Settings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ModelSlot:
    """Everything the engine keeps for one model id, loaded or not."""

    model_id: str
    spec: FamilySpec
    queue: RequestQueue
    worker: Worker | None = None
    load_task: asyncio.Task[None] | None = None
    load_error: ImagineError | None = None  # the last load's failure, until the next attempt
    load_error_reported: bool = False  # a waiting request already received load_error
    memory_bytes: int = 0  # measured at the last successful load

    @property
    def loading(self) -> bool:
        return self.load_task is not None and not self.load_task.done()

    @property
    def state(self) -> str:
        if self.worker is not None:
            return "ready"
        if self.loading:
            return "loading"
        return "failed" if self.load_error is not None else "unloaded"


class Residency:
    """Loads models into workers and evicts idle ones to keep within the memory budget."""

    def __init__(self, *, settings: Settings, manager: ManagerPort, metrics: Metrics) -> None:
        self._settings = settings
        self._manager = manager
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._slots: dict[str, ModelSlot] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    def slots(self) -> dict[str, ModelSlot]:
        return self._slots

    def ensure_loading(self, slot: ModelSlot) -> None:
        """Start loading `slot`'s model in the background unless it is loaded or loading."""
        if slot.worker is None and not slot.loading and not self._closed:
            slot.load_task = asyncio.create_task(
                self._load(slot), name=f"imagine-load:{slot.model_id}"
            )

    async def _load(self, slot: ModelSlot) -> None:
        async with self._lock:
            if slot.worker is not None:
                return
            slot.load_error = None
            await self._make_room(exclude=slot, incoming=slot.memory_bytes)
            try:
                loaded = await self._manager.load(slot.model_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._load_failed(slot, exc)
                return
            slot.memory_bytes = model_bytes(loaded)
            worker = self._new_worker(slot, loaded)
            await worker.calibrate()
            slot.worker = worker
            worker.start()
            self._metrics.model_loads.labels(model=slot.model_id, outcome="ok").inc()
            await self._make_room(exclude=slot, incoming=0)
            self._publish()

    def _load_failed(self, slot: ModelSlot, exc: Exception) -> None:
        if isinstance(exc, ImagineError):
            error: ImagineError = exc
        else:
            error = ModelLoadFailed(
                f"model {slot.model_id} failed to load: {type(exc).__name__}: {exc}"[:500]
            )
        log.error("loading %s failed: %s", slot.model_id, error.message)
        slot.load_error = error
        slot.load_error_reported = False
        self._metrics.model_loads.labels(model=slot.model_id, outcome="failed").inc()
        for job in slot.queue.drain():
            if job.live:
                job.fail(copy_error(error))
                slot.load_error_reported = True
        self._metrics.queue_depth.labels(model=slot.model_id).set(0)

    def _new_worker(self, slot: ModelSlot, loaded: object) -> Worker:
        s = self._settings
        stepper = stepper_of(self._manager, loaded) if s.batching == "step" else None
        kind = partial(StepWorker, stepper=stepper) if stepper is not None else Worker
        return kind(
            model_id=slot.model_id,
            loaded=loaded,
            manager=self._manager,
            queue=slot.queue,
            metrics=self._metrics,
            max_batch_size=s.max_batch_size,
            max_batch_pixels=s.max_batch_pixels,
            batch_wait_s=s.batch_wait_ms / 1000.0,
            on_idle=self._on_idle,
            calibration=(
                Calibration(
                    slot.model_id,
                    slot.spec,
                    max_pixels=s.max_pixels,
                    revision=model_revision(loaded),
                )
                if s.max_request_s
                else None
            ),
        )

    def used_bytes(self) -> int:
        return sum(s.memory_bytes for s in self._slots.values() if s.worker is not None)

    async def _make_room(self, *, exclude: ModelSlot, incoming: int) -> None:
        budget = self._settings.memory_budget_bytes
        if budget <= 0:
            return
        idle = [
            s
            for s in self._slots.values()
            if s is not exclude and s.worker is not None and not s.worker.busy
        ]
        idle.sort(key=lambda s: s.worker.last_used if s.worker else 0.0)
        for victim in idle:
            if self.used_bytes() + incoming <= budget:
                return
            await self._evict(victim)
        if self.used_bytes() + incoming > budget:
            log.warning("memory budget %d exceeded: other models are busy", budget)

    async def _evict(self, slot: ModelSlot) -> None:
        worker, slot.worker = slot.worker, None
        if worker is None:
            return
        log.info("evicting idle model %s (%d bytes)", slot.model_id, slot.memory_bytes)
        await worker.stop()
        await asyncio.to_thread(self._manager.unload, slot.model_id)
        self._publish()
        if len(slot.queue):  # requests arrived while it was being evicted
            self.ensure_loading(slot)

    def _on_idle(self) -> None:
        budget = self._settings.memory_budget_bytes
        if budget > 0 and self.used_bytes() > budget and not self._lock.locked():
            task = asyncio.create_task(self._rebalance())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _rebalance(self) -> None:
        async with self._lock:
            newest = max(
                (s for s in self._slots.values() if s.worker is not None),
                key=lambda s: s.worker.last_used if s.worker else 0.0,
                default=None,
            )
            if newest is not None:
                await self._make_room(exclude=newest, incoming=0)

    def _publish(self) -> None:
        self._metrics.set_models(
            {s.model_id: s.memory_bytes for s in self._slots.values() if s.worker is not None}
        )

    async def close(self) -> None:
        """Cancel loads, stop workers, unload every model, fail what is still queued."""
        self._closed = True
        tasks = [s.load_task for s in self._slots.values() if s.loading]
        tasks += list(self._background)
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in tasks if t is not None], return_exceptions=True)
        for slot in self._slots.values():
            await self._evict(slot)
            for job in slot.queue.drain():
                job.fail(GenerationFailed("the server is shutting down"))
        self._publish()


def copy_error(error: ImagineError) -> ImagineError:
    """A fresh instance of a load error, so each waiter raises its own exception object."""
    if type(error) is ModelLoadFailed:
        return ModelLoadFailed(error.message)
    try:
        return type(error)(error.message)
    except TypeError:
        return ModelLoadFailed(error.message)
