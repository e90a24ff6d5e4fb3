"""One worker per loaded pipeline instance.

Every `run_batch` call of the worker's model runs on one thread: the one the manager loaded the
model on (`ports.model_thread`; see LoadedModel.thread for why), else a single-thread executor of
the worker's own. So the pipeline never sees two calls at once and the event loop never runs
model code.
It pulls batches from its model's queue (see `batcher`), marks each job running, hands the
manager one step observer per job, checks one output per input, and settles each job: a result,
or a typed error (every job of a failed batch gets its own GenerationFailed, or the ServerError
the manager raised). Denoising steps are counted as they run (each observer call is one step of
one image), so an interrupted call's steps show too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imagine.engine.admission import RequestQueue
from imagine.engine.batcher import next_batch
from imagine.engine.cost import Calibration
from imagine.engine.job import Batch, Job
from imagine.engine.ports import ManagerPort, StepInfo, StepObserver, model_thread
from imagine.errors import GenerationFailed, ServerError
from imagine.metrics import Metrics
from imagine.request import GenerationResult

log = logging.getLogger(__name__)


class Worker:
    """Drains `queue` through `manager.run_batch(loaded, ...)`, one batch at a time."""

    def __init__(
        self,
        *,
        model_id: str,
        loaded: Any,
        manager: ManagerPort,
        queue: RequestQueue,
        metrics: Metrics,
        max_batch_size: int,
        max_batch_pixels: int,
        batch_wait_s: float,
        on_idle: Callable[[], None] = lambda: None,
        calibration: Calibration | None = None,
    ) -> None:
        self.model_id = model_id
        self.loaded = loaded
        self._manager = manager
        self._queue = queue
        self._metrics = metrics
        self._max_size = max_batch_size
        self._max_pixels = max_batch_pixels
        self._wait_s = batch_wait_s
        self._calibration = calibration
        self._on_idle = on_idle
        shared = model_thread(loaded)
        self._owns_executor = shared is None
        self._executor = shared or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="imagine-worker"
        )
        self._task: asyncio.Task[None] | None = None
        self.current: Batch | None = None
        self.last_used = time.monotonic()
        # Whether the model has company: the last batch held several requests, or more were
        # waiting when it ended. Only then is the batch window worth its wait; a lone client's
        # requests go at once (the window was 1 % of the embedded model's latency, for nothing).
        self._contended = False

    @property
    def busy(self) -> bool:
        """A batch is running, or requests are waiting for this model."""
        return self.current is not None or len(self._queue) > 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"imagine-worker:{self.model_id}")

    async def stop(self) -> None:
        """Interrupt the running batch (its requests fail), stop the loop, and wait until the
        model thread is idle, so the caller may unload the pipeline safely."""
        if self.current is not None:
            self.current.stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._owns_executor:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            return
        # The manager owns the thread: wait until it is idle (its queue is FIFO). RuntimeError:
        # already shut down, so nothing runs there.
        with contextlib.suppress(RuntimeError):
            await asyncio.wrap_future(self._executor.submit(lambda: None))

    async def calibrate(self) -> None:
        """Time the calibration calls (imagine.engine.cost.Calibration) and give the queue's
        rate the sizes they measured. Run before `start`, while the model still counts as
        loading. Nothing to do when no calibration was asked for (max_request_s = 0)."""
        plan = self._calibration
        if plan is None:
            return
        for request in plan:
            started = time.monotonic()
            try:
                await asyncio.wrap_future(
                    self._executor.submit(self._manager.run_batch, self.loaded, [request])
                )
            except Exception as exc:  # then the first real batches measure it instead
                log.warning("calibrating %s failed: %s", self.model_id, str(exc)[:200])
                return
            plan.took(time.monotonic() - started)
        self._queue.rate.calibrate(plan.sizes)
        log.info("%s cost model: %s", self.model_id, self._queue.rate.describe())

    async def _run(self) -> None:
        while True:
            batch = await next_batch(
                self._queue,
                max_size=self._max_size,
                max_pixels=self._max_pixels,
                wait_s=self._wait_s if self._contended else 0.0,
            )
            self._metrics.queue_depth.labels(model=self.model_id).set(len(self._queue))
            self.current = batch
            try:
                await self._execute(batch)
            finally:
                self.current = None
                self.last_used = time.monotonic()
                self._contended = len(batch.items) > 1 or len(self._queue) > 0
            if not self.busy:
                self._on_idle()

    async def _execute(self, batch: Batch) -> None:
        live = [job for job in batch.items if job.live]
        if not live:
            return
        batch.items = live
        requests = [job.request for job in live]
        started = time.monotonic()
        for job in live:
            if job.started_at is None:  # run again alone after a failed batch: not queued again
                self._metrics.queue_seconds.labels(model=self.model_id).observe(
                    started - job.enqueued_at
                )
            job.started(batch)
        units = self._queue.rate.units_of(job.request for job in live)
        self._queue.running(units)
        steps = self._metrics.denoising_steps.labels(model=self.model_id)

        def observer(job: Job) -> StepObserver:
            def observe(info: StepInfo) -> bool:  # on the model thread, after every step
                steps.inc()
                return job.observe(info) or batch.stopping.is_set()

            return observe

        call = self._executor.submit(
            self._manager.run_batch,
            self.loaded,
            requests,
            observers=[observer(job) for job in live],
        )
        try:
            results = await asyncio.wrap_future(call)
        except asyncio.CancelledError:
            _fail(live, lambda: GenerationFailed("the server stopped this model while generating"))
            raise
        except Exception as exc:  # any pipeline failure becomes a typed error per request
            self._metrics.batch_failures.labels(model=self.model_id).inc()
            if not any(job.live for job in live):
                return  # every job was canceled; nobody is waiting for an answer
            if len(live) > 1 and not batch.stopping.is_set():
                # One bad request must not fail the others: run each alone (their pixels are
                # what they would be in the batch, one generator each), so only it fails.
                log.warning(
                    "batch of %d failed on %s (%s: %s); running each request alone",
                    len(live),
                    self.model_id,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                await self._each_alone(live)
                return
            log.exception("batch of %d failed on %s", len(live), self.model_id)
            _fail(live, _error_factory(exc))
            return
        finally:
            self._queue.running(0)
        elapsed = time.monotonic() - started
        if not batch.stopping.is_set() and any(job.live for job in live):
            self._queue.rate.record(elapsed, units)  # a call that ran all its steps
        if batch.stopping.is_set():
            _fail(live, lambda: GenerationFailed("the server stopped this model while generating"))
            return
        if not any(job.live for job in live):
            return  # interrupted: outputs are partial; every job was canceled
        problem = _check_outputs(live, results)
        if problem:
            log.error("%s on %s", problem, self.model_id)
            _fail(live, lambda: GenerationFailed(f"internal error: {problem}"))
            return
        self._metrics.observe_batch(
            self.model_id,
            size=len(live),
            seconds=elapsed,
            steps=requests[0].num_inference_steps,
            timings=results[0].timings,
        )
        for job, result in zip(live, results, strict=True):
            if job.live:
                result.timings.setdefault("queue", started - job.enqueued_at)
                job.succeed(result)

    async def _each_alone(self, jobs: list[Job]) -> None:
        for job in jobs:
            if not job.live:
                continue
            alone = Batch(items=[job])
            self.current = alone
            await self._execute(alone)


def _check_outputs(batch: list[Job], results: Any) -> str | None:
    """One GenerationResult per input, in order; a description of the breach, else None."""
    if not isinstance(results, list) or len(results) != len(batch):
        n = len(results) if isinstance(results, list) else type(results).__name__
        return f"the pipeline returned {n} outputs for {len(batch)} inputs"
    for p, result in zip(batch, results, strict=True):
        if not isinstance(result, GenerationResult) or result.request != p.request:
            return "the pipeline returned outputs that do not match their inputs"
    return None


def _error_factory(exc: Exception) -> Callable[[], Exception]:
    """A fresh exception per request (one instance raised in many tasks would share tracebacks)."""
    if isinstance(exc, ServerError) and type(exc) in (GenerationFailed, ServerError):
        return lambda: type(exc)(exc.message)
    message = f"generation failed: {type(exc).__name__}: {exc}"[:500]
    return lambda: GenerationFailed(message)


def _fail(batch: list[Job], make: Callable[[], Exception]) -> None:
    for job in batch:
        job.fail(make())
