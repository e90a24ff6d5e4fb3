"""One request's life in the engine, in one place.

    submit ─► QUEUED (position, ETA) ─► RUNNING (step/total, ETA, previews) ─► SUCCEEDED
                 │                          │                                  FAILED
                 └── cancel(): removed ─────┴── cancel(): stops at the next ─► CANCELED
                                                 step once its whole batch is canceled

A `Job` is the handle `Engine.submit` returns: its state, queue position, progress, ETA,
latest preview, result or error; `wait()` for the result, `events()` for every change, and
`cancel()`. The batch is only a grouping of jobs: each job has its own step observer
(`observe`), called on the model's thread after every denoising step, so the lifecycle does not
change when requests join and leave a running batch step by step.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from imagine.engine.broadcast import Broadcast
from imagine.errors import Canceled, GenerationFailed, ImagineError, Overloaded
from imagine.request import GenerationRequest, GenerationResult, JobState

if TYPE_CHECKING:
    from imagine.request import StepInfo

__all__ = ["Batch", "Job", "JobSnapshot", "PreviewPolicy", "wait_within"]


@dataclass(frozen=True, slots=True)
class PreviewPolicy:
    """How often a job renders a preview: after a step once at least `every_steps` steps and
    `interval_s` seconds have passed since the last one (the first step always qualifies)."""

    every_steps: int = 1
    interval_s: float = 0.25
    max_side: int = 256
    quality: int = 70  # JPEG


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """Where a job stands; every change publishes a new one."""

    state: JobState
    position: int | None = None  # 1-based place in its model's queue while queued
    step: int = 0  # denoising steps done
    total: int = 0
    eta_s: float | None = None
    preview: bytes | None = None  # JPEG of the latest x0 estimate
    preview_step: int = 0
    error: str | None = None
    error_code: str | None = None


@dataclass(eq=False, slots=True)
class Batch:
    """Jobs sharing one pipeline call; `stopping` ends the call at the next step for all (the
    model is being unloaded or the server is stopping)."""

    items: list[Job]
    stopping: threading.Event = field(default_factory=threading.Event)


class Job:
    """One admitted request. Created by `Engine.submit`; all methods run on the event loop
    except `observe`, which the model's thread calls."""

    def __init__(
        self,
        request: GenerationRequest,
        *,
        client_id: str,
        key: Any,
        previews: PreviewPolicy | None = None,
        job_id: str | None = None,
    ) -> None:
        self.id = job_id or uuid.uuid4().hex
        self.request = request
        self.client_id = client_id
        self.key = key  # spec.batch_key(request): equal keys may share one pipeline call
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[GenerationResult] = self.loop.create_future()
        self.future.add_done_callback(_retrieve)
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.batch: Batch | None = None
        self.cancel_requested = False  # read by the model thread at every step
        self.on_cancel: Callable[[Job], None] = lambda job: None  # set by the engine
        self._previews = previews
        self._last_preview: tuple[int, float] = (-(10**9), -math.inf)
        self._events: Broadcast[JobSnapshot] = Broadcast(JobSnapshot(JobState.QUEUED))

    # --- reading

    @property
    def snapshot(self) -> JobSnapshot:
        return self._events.latest

    @property
    def state(self) -> JobState:
        return self.snapshot.state

    @property
    def live(self) -> bool:
        """Still wanted: not canceled and not settled."""
        return not self.cancel_requested and not self.future.done()

    @property
    def pixels(self) -> int:
        return self.request.width * self.request.height

    @property
    def wants_previews(self) -> bool:
        return self._previews is not None

    @property
    def subscribers(self) -> int:
        return len(self._events)

    async def wait(self) -> GenerationResult:
        """The result; raises the job's error (Canceled when canceled). Cancelling the caller
        does not cancel the job (call `cancel()` for that)."""
        return await asyncio.shield(self.future)

    def events(self) -> AsyncIterator[JobSnapshot]:
        """The current snapshot, then every change, ending after the terminal one."""
        return self._events.subscribe()

    # --- commands

    def cancel(self) -> bool:
        """Cancel: a queued job leaves its queue at once; a running one stops at the next step
        (its pipeline call stops once every job of its batch is canceled; otherwise its result
        is dropped and the others' pixels are untouched). False when already finished."""
        if self.future.done():
            return False
        self.cancel_requested = True
        self.on_cancel(self)
        self._settle(JobState.CANCELED, error=Canceled("canceled"))
        return True

    # --- called by the engine (event loop)

    def queued_at(self, position: int, eta_s: float | None) -> None:
        snap = self.snapshot
        if snap.state is JobState.QUEUED and (snap.position, snap.eta_s) != (position, eta_s):
            self._publish(position=position, eta_s=eta_s)

    def started(self, batch: Batch) -> None:
        self.batch = batch
        self.started_at = time.monotonic()
        self._publish(state=JobState.RUNNING, position=None, total=self.request.num_inference_steps)

    def succeed(self, result: GenerationResult) -> None:
        if not self.future.done():
            self.future.set_result(result)
            self._events.close(
                replace(self.snapshot, state=JobState.SUCCEEDED, eta_s=0.0, position=None)
            )

    def fail(self, error: BaseException) -> None:
        self._settle(JobState.FAILED, error=error)

    # --- called by the model's thread after every denoising step

    def observe(self, info: StepInfo) -> bool:
        """Record a step (and render a preview when one is due); True when this job wants its
        pipeline call stopped."""
        if self.cancel_requested:
            return True
        preview = self._render_preview(info) if self._preview_due(info.step) else None
        self.loop.call_soon_threadsafe(self._stepped, info.step, info.total, preview)
        return False

    # --- internals

    def _preview_due(self, step: int) -> bool:
        policy = self._previews
        if policy is None:
            return False
        last_step, last_at = self._last_preview
        now = time.monotonic()
        if step - last_step < policy.every_steps or now - last_at < policy.interval_s:
            return False
        self._last_preview = (step, now)
        return True

    def _render_preview(self, info: StepInfo) -> bytes | None:
        assert self._previews is not None
        image = info.preview(self._previews.max_side)
        if image is None:
            return None
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=self._previews.quality)
        return buf.getvalue()

    def _stepped(self, step: int, total: int, preview: bytes | None) -> None:
        if self.future.done():
            return
        elapsed = time.monotonic() - (self.started_at or self.enqueued_at)
        changes: dict[str, Any] = {"step": step, "total": total}
        changes["eta_s"] = round(elapsed / step * (total - step), 3) if step else None
        if preview is not None:
            changes.update(preview=preview, preview_step=step)
        self._publish(**changes)

    def _settle(self, state: JobState, *, error: BaseException) -> None:
        if self.future.done():
            return
        self.future.set_exception(error)
        message = error.message if isinstance(error, ImagineError) else str(error)
        code = error.code if isinstance(error, ImagineError) else "server_error"
        self._events.close(
            replace(
                self.snapshot,
                state=state,
                position=None,
                eta_s=None,
                error=message,
                error_code=code,
            )
        )

    def _publish(self, **changes: Any) -> None:
        self._events.publish(replace(self.snapshot, **changes))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a job's exception as seen: a job nobody awaits (canceled, or its waiter left) must
    not log "Future exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


async def wait_within(
    job: Job, timeout: float, *, retry_after: Callable[[], float]
) -> GenerationResult:
    """The job's result within `timeout` seconds (request_timeout_s), else the job is canceled
    and this raises Overloaded (it never started; Retry-After from `retry_after()`) or
    GenerationFailed (it was running). Cancelling the caller cancels the job."""
    try:
        async with asyncio.timeout(timeout):
            return await job.wait()
    except asyncio.CancelledError:
        job.cancel()
        raise
    except TimeoutError:
        started = job.batch is not None
        job.cancel()
        if not started:
            raise Overloaded(
                f"the request waited {timeout:g} s for model {job.request.model_id} without "
                "starting (request_timeout_s)",
                retry_after=retry_after(),
            ) from None
        raise GenerationFailed(
            f"generation took longer than {timeout:g} s (request_timeout_s)"
        ) from None
