"""The engine: admission, per-model queues, dynamic batching, workers, loading and cancellation.

    submit(request) → Job          (see imagine.engine.job for the lifecycle)
      ├─ size check                 InvalidRequest (400) above settings.max_batch_pixels
      ├─ model not ready, not waiting → load in the background, ModelLoading (503)
      ├─ cost check                 InvalidRequest (400) when predicted past max_request_s
      ├─ deadline check             Overloaded (429) when the work ahead would pass the timeout
      ├─ client rate limit          Overloaded (429) past client_requests_per_minute
      ├─ RequestQueue.push          Overloaded (429) when the model's queue or the client is full
      └─ the model's Worker runs it (batcher → run_batch thread) and settles the Job
    wait(job)                      the result within settings.request_timeout_s
    generate(request) = submit, then wait

Cancellation: `Job.cancel()` removes a queued job at once. A running one is marked canceled and
its result dropped; the pipeline call itself stops (at the next denoising step) only when every
job of its batch is canceled, so the other jobs of a shared batch are never touched. Cancelling
the task that awaits `generate` cancels its job.

Timeout: a `generate` still unanswered after settings.request_timeout_s cancels its job and
raises Overloaded (if it never left the queue) or GenerationFailed (if it was running).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from imagine.engine.admission import ClientRateLimit, RequestQueue
from imagine.engine.job import Job, PreviewPolicy, wait_within
from imagine.engine.ports import ManagerPort
from imagine.engine.residency import ModelSlot, Residency, copy_error
from imagine.errors import (
    InvalidRequest,
    ModelLoadFailed,
    ModelLoading,
    ModelNotFound,
    Overloaded,
)
from imagine.metrics import Metrics
from imagine.models.spec import ModelInfo
from imagine.request import GenerationRequest, GenerationResult
from imagine.settings import Settings

log = logging.getLogger(__name__)


class Engine:
    """Implements `imagine.engine.base.Engine` over a ModelManager (any `ManagerPort`)."""

    def __init__(
        self, *, settings: Settings, manager: ManagerPort, metrics: Metrics | None = None
    ) -> None:
        self._settings = settings
        self._manager = manager
        self.metrics = metrics if metrics is not None else Metrics()
        self._residency = Residency(settings=settings, manager=manager, metrics=self.metrics)
        self._slots = self._residency.slots()
        self._rate_limit = ClientRateLimit(per_minute=settings.client_requests_per_minute)

    async def start(self) -> None:
        """Start loading every model in settings.preload in the background (does not wait).
        Preload ids that resolve to nothing are logged, not raised."""
        for model_id in self._settings.preload:
            try:
                self._residency.ensure_loading(self._slot(model_id))
            except ModelNotFound as exc:
                log.error("cannot preload %s: %s", model_id, exc.message)

    async def close(self) -> None:
        """Stop workers, cancel loads, unload models; queued requests fail."""
        await self._residency.close()

    async def load(self, model_id: str) -> None:
        """Load `model_id` now (if not loaded) and wait until it is ready to serve.
        Raises ModelNotFound, ModelLoadFailed."""
        slot = self._slot(model_id)
        self._residency.ensure_loading(slot)
        if slot.load_task is not None:
            await asyncio.shield(slot.load_task)
        if slot.worker is None:
            raise copy_error(slot.load_error or ModelLoadFailed(f"model {model_id} is not loaded"))

    def describe(self, model_id: str) -> ModelInfo:
        """Resolve a model id without loading it (state as the engine sees it).
        Raises ModelNotFound."""
        info = self._manager.describe(model_id)
        slot = self._slots.get(model_id)
        if slot is None:
            return info
        return dataclasses.replace(info, state=slot.state)

    def submit(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        wait_for_model: bool,
        previews: PreviewPolicy | None = None,
        job_id: str | None = None,
        force: bool = False,
    ) -> Job:
        """Admit one request and return its Job at once (call on the event loop).

        Raises InvalidRequest (too many pixels for the memory limit, or predicted to run past
        max_request_s), ModelNotFound,
        ModelLoading (model not ready and `wait_for_model` False; a load is started),
        ModelLoadFailed (when not waiting, the last load failed and no request has been told
        yet; the next request retries), Overloaded (the model's queue or the client's share of
        it is full, the client's rate is spent, or the work ahead would pass the request
        timeout; `force` skips these and the cost check, for jobs accepted before a restart:
        a calibration measured on a busy machine must not fail a job that was accepted).
        """
        self._check_size(request)
        slot = self._slot(request.model_id)
        if slot.worker is None and not wait_for_model:
            error = slot.load_error
            if error is not None and not slot.loading and not slot.load_error_reported:
                slot.load_error_reported = True  # reported once; the next request retries
                raise copy_error(error)
            self._residency.ensure_loading(slot)
            raise ModelLoading(
                request.model_id,
                estimated_time=self._manager.estimated_load_time(request.model_id),
            )
        job = Job(
            request,
            client_id=client_id,
            key=slot.spec.batch_key(request),
            previews=previews,
            job_id=job_id,
        )
        if not force:  # a job accepted before a restart is never refused again
            self._check_cost(slot, job)
            self._check_deadline(slot, job)
            self._rate_limit.take(client_id)
        job.on_cancel = lambda j: self._withdraw(slot, j)
        slot.queue.push(job, force=force)
        self.metrics.queue_depth.labels(model=slot.model_id).set(len(slot.queue))
        if slot.worker is None:
            self._residency.ensure_loading(slot)
        return job

    async def generate(
        self, request: GenerationRequest, *, client_id: str, wait_for_model: bool
    ) -> GenerationResult:
        """Submit one request and wait for its image (see `wait`)."""
        job = self.submit(request, client_id=client_id, wait_for_model=wait_for_model)
        return await self.wait(job)

    async def wait(self, job: Job) -> GenerationResult:
        """The result of a submitted job within settings.request_timeout_s. Raises Overloaded
        (the timeout passed in the queue), GenerationFailed (it passed while running), or the
        job's error; cancelling the awaiting task cancels the job."""
        return await wait_within(
            job,
            self._settings.request_timeout_s,
            retry_after=lambda: self._slot(job.request.model_id).queue.retry_after(),
        )

    def _withdraw(self, slot: ModelSlot, job: Job) -> None:
        """A job was canceled: take it out of its queue, or let its batch know."""
        where = "queued" if slot.queue.remove(job) else "running"
        if where == "queued":
            self.metrics.queue_depth.labels(model=slot.model_id).set(len(slot.queue))
        self.metrics.cancelled.labels(model=slot.model_id, where=where).inc()

    def health(self) -> dict[str, Any]:
        """Per-model state as the engine sees it, plus the manager's own report."""
        models: dict[str, Any] = {}
        for model_id, slot in self._slots.items():
            entry: dict[str, Any] = {
                "state": slot.state,
                "queued": len(slot.queue),
                "running": len(slot.worker.current.items)
                if slot.worker and slot.worker.current
                else 0,
                "memory_bytes": slot.memory_bytes if slot.worker else 0,
                # the measured cost model: what max_request_s and Retry-After come from
                "cost": slot.queue.rate.describe(),
            }
            if slot.load_error is not None:
                entry["error"] = slot.load_error.message
            models[model_id] = entry
        return {
            "models": models,
            "memory_used_bytes": self._residency.used_bytes(),
            "memory_budget_bytes": self._settings.memory_budget_bytes,
            "manager": self._manager.health(),
        }

    def _slot(self, model_id: str) -> ModelSlot:
        slot = self._slots.get(model_id)
        if slot is None:
            info = self._manager.describe(model_id)  # raises ModelNotFound
            s = self._settings
            slot = ModelSlot(
                model_id=model_id,
                spec=info.spec,
                queue=RequestQueue(
                    model_id=model_id,
                    capacity=s.queue_size,
                    per_client=s.per_client_queue,
                    max_batch_size=s.max_batch_size,
                ),
            )
            self._slots[model_id] = slot
        return slot

    def _check_cost(self, slot: ModelSlot, job: Job) -> None:
        """A request predicted (at this model's measured rate) to run longer than
        max_request_s is refused: one request must not hold the model for everyone."""
        limit = self._settings.max_request_s
        if not limit or not slot.queue.rate.measured:
            return
        r = job.request
        predicted = slot.queue.rate.seconds(slot.queue.rate.units(r))
        if predicted > limit:
            raise InvalidRequest(
                f"width × height × num_inference_steps = {r.width} × {r.height} × "
                f"{r.num_inference_steps} is predicted to take {predicted:.0f} s on this server; "
                f"the limit is {limit:g} s per request (max_request_s): use fewer steps or a "
                "smaller size",
                field="num_inference_steps",
            )

    def _check_deadline(self, slot: ModelSlot, job: Job) -> None:
        """Refuse at once (429) what would wait past request_timeout_s behind the queued work,
        rather than admit it to time out later."""
        if not slot.queue.rate.measured:
            return
        wait = slot.queue.wait_s(job)
        timeout = self._settings.request_timeout_s
        if wait > timeout:
            raise Overloaded(
                f"the queued work for model {slot.model_id} would take {wait:.0f} s, past this "
                f"server's {timeout:g} s request timeout; retry later",
                retry_after=slot.queue.retry_after(),
            )

    def _check_size(self, request: GenerationRequest) -> None:
        limit = self._settings.max_batch_pixels
        pixels = request.width * request.height
        if limit and pixels > limit:
            raise InvalidRequest(
                f"width × height = {request.width} × {request.height} = {pixels} pixels exceeds "
                f"this server's memory limit of {limit} pixels per pipeline call "
                "(max_batch_pixels); ask for a smaller image",
                field="width",
            )
