"""The worker in step-level batching (settings.batching = "step").

It runs one denoising step at a time over its model's active requests (rows of a `Stepper`):
between two steps, queued requests of the same group (the size the pipeline runs at) join,
whatever their steps, scheduler or guidance; finished rows are decoded and answered at once;
canceled ones leave. So a short request never waits for a long batch to end, and requests that
whole-request batching could never put together share every denoiser call.

Each tick is one call on the model's thread: start the joiners (text encoding, latents), one
step over every row, the per-job observers (progress, previews, cancellation), then decoding
of the rows that finished. The event loop only decides who joins and settles the jobs.

Fairness stays first come, first served: the queue's head joins the running group if it fits;
if it cannot (another size, or a request only whole-request batching can run), nobody else
joins until the group has drained, and then the head goes next. A model whose family has no
step functions gets the request-level `Worker` instead (see Residency).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from imagine.engine.job import Batch, Job
from imagine.engine.ports import StepFailed, StepInfo, Stepper
from imagine.engine.worker import Worker
from imagine.errors import GenerationFailed
from imagine.request import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)


@dataclass
class _Tick:
    """What one tick did, for the event loop to settle."""

    succeeded: list[tuple[Job, GenerationResult]] = field(default_factory=list)
    failed: list[tuple[Job, BaseException]] = field(default_factory=list)
    denoiser_rows: int = 0
    stepped: list[GenerationRequest] = field(default_factory=list)  # one step each


class StepWorker(Worker):
    """Drains the model's queue step by step through a Stepper (see the module docstring)."""

    def __init__(self, *, stepper: Stepper, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stepper = stepper
        self._rows: list[Any] = []  # touched only inside a tick, on the model's thread
        self._group: Hashable | None = None
        # Ticks since a request last finished: their seconds, and the predicted seconds of the
        # steps they ran (what the queue's WorkRate learns its factor from).
        self._measured = (0.0, 0.0)

    async def _run(self) -> None:
        while True:
            if not self._rows:
                head = await self._next_head()
                self._group = self._group_of(head)
                self.current = Batch(items=[])
            joiners = self._joiners()
            started = time.monotonic()
            try:
                tick = await asyncio.wrap_future(self._executor.submit(self._tick, joiners))
            except asyncio.CancelledError:
                self._stopped(self.current.items if self.current else joiners)
                raise
            except Exception as exc:  # a bug of ours: fail the group, keep serving the queue
                log.exception("a step of %s failed", self.model_id)
                tick = _Tick(failed=[(job, _copy(exc)) for job in self.current.items])
                self._stepper.drop(self._rows)
                self._rows = []
            self._learn(tick, time.monotonic() - started)
            self._settle(tick)
            if not self._rows:
                self.current, self._group = None, None
                if not self.busy:
                    self._on_idle()

    async def _next_head(self) -> Job:
        while True:
            self._queue.changed.clear()
            head = self._queue.head()
            if head is not None:
                return head
            await self._queue.changed.wait()

    def _group_of(self, job: Job) -> Hashable:
        return self._stepper.group_key(job.request)

    def _joiners(self) -> list[Job]:
        """Queued jobs that join at this step: from the head on, while each fits the group and
        the caps (rows: max_batch_size; pixels: max_batch_pixels)."""
        assert self.current is not None
        active = [job for job in self.current.items if job.live]
        count, pixels = len(active), sum(job.pixels for job in active)
        joiners: list[Job] = []
        while True:
            head = self._queue.head()
            if head is None or self._group_of(head) != self._group:
                break
            if count >= self._max_size or (
                count and self._max_pixels and pixels + head.pixels > self._max_pixels
            ):
                break
            self._queue.take([head])
            joiners.append(head)
            count, pixels = count + 1, pixels + head.pixels
        now = time.monotonic()
        for job in joiners:
            self._metrics.queue_seconds.labels(model=self.model_id).observe(now - job.enqueued_at)
            job.started(self.current)
        self.current.items = [*active, *joiners]
        if joiners:
            self._metrics.queue_depth.labels(model=self.model_id).set(len(self._queue))
        return joiners

    # --- on the model's thread

    def _tick(self, joiners: list[Job]) -> _Tick:
        tick = _Tick()
        stepper = self._stepper
        if joiners:
            try:
                self._rows += stepper.start(
                    [job.request for job in joiners],
                    previews=any(job.wants_previews for job in joiners),
                    owners=joiners,
                )
            except StepFailed as failure:
                self._rows += failure.started
                tick.failed += [(row.owner, exc) for row, exc in failure.errors.items()]
        stopping = self.current is not None and self.current.stopping.is_set()
        leaving = [row for row in self._rows if stopping or not row.owner.live]
        if leaving:
            stepper.drop(leaving)
            self._rows = [row for row in self._rows if row not in leaving]
        if stopping:
            tick.failed += [(row.owner, _stopped_error()) for row in leaving]
            return tick
        rows = self._rows
        if not rows:
            return tick
        tick.denoiser_rows = len(rows)
        tick.stepped = [row.request for row in rows]
        try:
            stepper.step(rows)
        except StepFailed as failure:
            stepper.drop(list(failure.errors))
            tick.failed += [(row.owner, exc) for row, exc in failure.errors.items()]
            rows = self._rows = [row for row in rows if row not in failure.errors]
        steps = self._metrics.denoising_steps.labels(model=self.model_id)
        for row in rows:
            steps.inc()
            row.owner.observe(StepInfo(row.index, row.total, stepper.preview(row)))
        finished = [row for row in rows if row.done]
        if finished:
            self._rows = [row for row in rows if not row.done]
            try:
                results = stepper.finish(finished)
            except Exception as exc:
                tick.failed += [(row.owner, _copy(exc)) for row in finished]
            else:
                tick.succeeded += [(row.owner, r) for row, r in zip(finished, results, strict=True)]
        return tick

    # --- back on the event loop

    def _settle(self, tick: _Tick) -> None:
        for job, exc in tick.failed:
            job.fail(exc)
        if tick.failed:
            self._metrics.batch_failures.labels(model=self.model_id).inc()
        for job, result in tick.succeeded:
            if not job.live:
                continue
            result.timings.setdefault("queue", (job.started_at or 0.0) - job.enqueued_at)
            self._metrics.observe_batch(
                self.model_id,
                size=tick.denoiser_rows,
                seconds=result.timings.get("total", 0.0),
                steps=job.request.num_inference_steps,
                timings=result.timings,
            )
            job.succeed(result)
        if self.current is not None:
            self.current.items = [job for job in self.current.items if job.live]
            units = self._queue.rate.units_of(job.request for job in self.current.items)
            self._queue.running(units)

    def _learn(self, tick: _Tick, seconds: float) -> None:
        """Feed the queue's WorkRate as a request-level batch would: the measured seconds of
        the ticks since a request last finished against their predicted seconds alone (each
        step's share of its request's units), so predictions follow the machine's speed."""
        if tick.failed or not tick.stepped:
            self._measured = (0.0, 0.0)  # an interrupted stretch says nothing of the rate
            return
        rate = self._queue.rate
        units = sum(rate.units(r) / max(1, r.num_inference_steps) for r in tick.stepped)
        spent, predicted = self._measured
        self._measured = (spent + seconds, predicted + units)
        if tick.succeeded:
            rate.record(*self._measured)
            self._measured = (0.0, 0.0)

    def _stopped(self, jobs: list[Job]) -> None:
        for job in jobs:
            job.fail(_stopped_error())
        with contextlib.suppress(Exception):
            self._queue.running(0)


def _stopped_error() -> GenerationFailed:
    return GenerationFailed("the server stopped this model while generating")


def _copy(exc: Exception) -> Exception:
    if isinstance(exc, GenerationFailed):
        return GenerationFailed(exc.message)
    return GenerationFailed(f"generation failed: {type(exc).__name__}: {exc}"[:500])
