"""An engine that runs each request on a model replica elsewhere, behind imagine's engine
protocol (`imagine.engine.base.Engine`), so the service layer, the job runner and every route
work unchanged in a Ray Serve ingress.

    submit(request) → RemoteJob at once; a driver task opens the replica's event stream:
        JobSnapshot … → the job mirrors them (position, step/total, ETA, preview)
        Finished      → job.succeed(result)        Failed → job.fail(the replica's error)
        the stream breaks because its replica died → the same request is streamed again
            (another replica takes it; the job goes back to queued), at most `resubmits` times
    job.cancel() → the driver task is cancelled → the stream is cancelled → the replica
        cancels its own engine Job (queued: removed; running: stops at the next step)

Admission (queue full, rate, cost, deadline) happens in the replica's engine; its Overloaded
comes back as the first event and is raised by `wait`, so a 429 with Retry-After reaches the
client as from a single server. The stream is opened by a callable given at construction (a
Serve handle call in production, a local engine in tests), so no Ray is imported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from prometheus_client import Counter

from imagine.engine.job import Batch, Job, JobSnapshot, PreviewPolicy, wait_within
from imagine.errors import GenerationFailed, ImagineError
from imagine.metrics import Metrics
from imagine.models.spec import ModelInfo
from imagine.ray_serve.events import Failed, Finished, ReplicaEvent, error_from_wire
from imagine.request import GenerationRequest, GenerationResult, JobState
from imagine.settings import Settings

__all__ = ["OpenStream", "RemoteEngine", "RemoteJob"]

log = logging.getLogger(__name__)


class OpenStream(Protocol):
    """Starts one request on some replica; the iterator yields its events. An iterator with a
    `cancel()` method (a Serve response generator) is cancelled through it, else `aclose()`."""

    def __call__(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        previews: PreviewPolicy | None,
        job_id: str,
        force: bool,
    ) -> AsyncIterator[ReplicaEvent]: ...


class RemoteJob(Job):
    """A Job whose work runs on a replica: it mirrors the replica's snapshots."""

    replica: str | None = None  # the replica that finished it

    def mirror(self, snap: JobSnapshot) -> None:
        """Take a replica's snapshot as this job's own (terminal ones come as Finished/Failed)."""
        if self.future.done() or snap.state.terminal:
            return
        if snap.state is JobState.QUEUED:
            if self.state is JobState.QUEUED and snap.position is not None:
                self.queued_at(snap.position, snap.eta_s)
            return
        if self.state is not JobState.RUNNING:
            self.started(Batch([self]))
        changes: dict[str, Any] = {"step": snap.step, "total": snap.total, "eta_s": snap.eta_s}
        if snap.preview is not None and snap.preview_step != self.snapshot.preview_step:
            changes.update(preview=snap.preview, preview_step=snap.preview_step)
        self._publish(**changes)

    def requeue(self) -> None:
        """Its replica died: it waits again (for another replica), from step 0."""
        if not self.future.done():
            self.batch = None
            self._publish(state=JobState.QUEUED, step=0, position=None, eta_s=None)


class RemoteEngine:
    """Implements `imagine.engine.base.Engine` over model replicas reached by `open_stream`.

    `describe` resolves ids locally (the registry reads only folders, the HF cache and the Hub:
    an ingress needs the same view of `model_dirs` as its replicas). `is_replica_lost(exc)`
    says whether an exception from a stream means its replica died (then the request is
    streamed again); `translate(exc)` may turn a transport error into an ImagineError (Serve's
    back-pressure into Overloaded)."""

    def __init__(
        self,
        *,
        settings: Settings,
        open_stream: OpenStream,
        is_replica_lost: Callable[[BaseException], bool] = lambda exc: False,
        translate: Callable[[BaseException], ImagineError | None] = lambda exc: None,
        resubmits: int = 2,
        metrics: Metrics | None = None,
        registry: Any = None,  # a ModelRegistry (the default) or anything with resolve(id)
    ) -> None:
        if registry is None:
            from imagine.models.registry import ModelRegistry  # imports torch

            registry = ModelRegistry(settings=settings)
        self._settings = settings
        self._open = open_stream
        self._is_lost = is_replica_lost
        self._translate = translate
        self._resubmits = resubmits
        self._registry = registry
        self.metrics = metrics if metrics is not None else Metrics()
        self._resubmitted = Counter(
            "imagine_ray_resubmitted",
            "Requests streamed again because the model replica running them died",
            ["model"],
            registry=self.metrics.registry,
        )
        self._drivers: set[asyncio.Task[None]] = set()
        self._ready: set[str] = set()  # models a replica has answered for through this ingress

    async def start(self) -> None:
        """Nothing to preload here: replicas load their models when requests reach them."""

    async def close(self) -> None:
        for task in list(self._drivers):
            task.cancel()
        await asyncio.gather(*self._drivers, return_exceptions=True)

    def describe(self, model_id: str) -> ModelInfo:
        resolved = self._registry.resolve(model_id)  # raises ModelNotFound
        state = "ready" if model_id in self._ready else "unloaded"
        return ModelInfo(
            model_id=model_id, spec=resolved.spec, revision=resolved.revision, state=state
        )

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
        """A RemoteJob at once. Every request waits for its model (a replica loads it when
        routed there); admission errors arrive from the replica and are raised by `wait`."""
        job = RemoteJob(
            request, client_id=client_id, key=request.model_id, previews=previews, job_id=job_id
        )
        task = asyncio.create_task(self._drive(job, previews=previews, force=force))
        self._drivers.add(task)
        task.add_done_callback(self._drivers.discard)
        job.on_cancel = lambda j: self._cancelled(j, task)
        return job

    async def wait(self, job: Job) -> GenerationResult:
        """As `imagine.engine.engine.Engine.wait`: the result within request_timeout_s, else
        Overloaded (never started) or GenerationFailed (started); cancelling the caller
        cancels the job."""
        return await wait_within(job, self._settings.request_timeout_s, retry_after=lambda: 1.0)

    async def generate(
        self, request: GenerationRequest, *, client_id: str, wait_for_model: bool
    ) -> GenerationResult:
        job = self.submit(request, client_id=client_id, wait_for_model=wait_for_model)
        return await self.wait(job)

    def health(self) -> dict[str, Any]:
        """What this ingress knows: the models its replicas have answered for and the requests
        it is following now (each replica's own engine reports in its Serve logs/metrics)."""
        return {
            "models": {model_id: {"state": "ready"} for model_id in sorted(self._ready)},
            "remote_requests": len(self._drivers),
        }

    # --- the driver: one task per job

    async def _drive(self, job: RemoteJob, *, previews: PreviewPolicy | None, force: bool) -> None:
        model_id = job.request.model_id
        for attempt in range(self._resubmits + 1):
            stream = self._open(
                job.request,
                client_id=job.client_id,
                previews=previews,
                job_id=job.id,
                force=force,
            )
            try:
                await self._follow(job, stream)
                return
            except asyncio.CancelledError:
                await _cancel(stream)
                raise
            except Exception as exc:
                if self._is_lost(exc) and attempt < self._resubmits:
                    log.warning(
                        "the replica running %s for model %s died (%s); streaming it again",
                        job.id,
                        model_id,
                        type(exc).__name__,
                    )
                    self._resubmitted.labels(model=model_id).inc()
                    job.requeue()
                    continue
                job.fail(self._error(exc))
                return

    async def _follow(self, job: RemoteJob, stream: AsyncIterator[ReplicaEvent]) -> None:
        steps = self.metrics.denoising_steps.labels(model=job.request.model_id)
        async for event in stream:
            if isinstance(event, JobSnapshot):
                before = job.snapshot.step
                job.mirror(event)
                if job.snapshot.step > before:
                    steps.inc(job.snapshot.step - before)
            elif isinstance(event, Finished):
                job.replica = event.replica
                self._ready.add(job.request.model_id)
                job.succeed(event.result)
                return
            elif isinstance(event, Failed):
                job.fail(error_from_wire(event))
                return
        job.fail(GenerationFailed("the model replica ended the request without an answer"))

    def _error(self, exc: Exception) -> ImagineError:
        translated = self._translate(exc)
        if translated is not None:
            return translated
        if self._is_lost(exc):
            return GenerationFailed(
                f"the model replicas running this request died {self._resubmits + 1} times"
            )
        log.error("a model replica stream failed: %s", type(exc).__name__)
        return GenerationFailed(f"a model replica failed ({type(exc).__name__})")

    def _cancelled(self, job: Job, task: asyncio.Task[None]) -> None:
        where = "running" if job.batch is not None else "queued"
        self.metrics.cancelled.labels(model=job.request.model_id, where=where).inc()
        task.cancel()


async def _cancel(stream: AsyncIterator[ReplicaEvent]) -> None:
    """Stop a stream whose job was cancelled, so the replica cancels its own job."""
    cancel = getattr(stream, "cancel", None)
    if cancel is not None:
        cancel()
        return
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
