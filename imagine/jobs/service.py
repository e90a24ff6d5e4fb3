"""Jobs over the engine: accepted durably, run once to completion, observable, cancellable.

    create → engine.submit (one engine Job per image) → store.create → acknowledged
    runner: first image starts → RUNNING saved (attempts + 1) → images encoded and stored
            → store.finish (once only) → subscribers, webhooks
    start (server start): every queued or running job in the store is queued again (with a
            relay, only those whose owner's lease has lapsed: no live replica runs them)
    relay (replicas sharing a Redis store, imagine.jobs.relay): this replica's views are
            published; streaming, waiting for or cancelling a job another replica runs goes
            through it

A `JobView` (record + live progress) is what every API renders, in its own shape. This module
knows no transport; `render` (given by the app) turns a view into the webhook payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from imagine.engine.broadcast import Broadcast
from imagine.engine.job import Job, JobSnapshot, PreviewPolicy
from imagine.errors import Canceled, ImagineError, InvalidRequest, JobExpired, JobNotFound
from imagine.jobs.record import JobRecord, JobState, new_job_id
from imagine.jobs.store import JobStore
from imagine.request import GenerationRequest
from imagine.service import EncodedImage, ImageService

__all__ = ["JobService", "JobView"]

log = logging.getLogger(__name__)

_EXPIRY_INTERVAL_S = 60.0
# How long cancelling another replica's job waits for it to end before answering.
_REMOTE_CANCEL_S = 10.0


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as clients see it: the stored record and, while it lives, its progress."""

    record: JobRecord
    progress: JobSnapshot | None = None

    @property
    def state(self) -> JobState:
        return self.record.state


@dataclass(eq=False)
class _Live:
    """A job this process is running (or has queued)."""

    record: JobRecord
    jobs: list[Job] = field(default_factory=list)
    views: Broadcast[JobView] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # True once the record is in the store (writes wait for it), False when the job was never
    # accepted (a refused or idempotent create): then nothing of it is ever written.
    accepted: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def view(self) -> JobView:
        return JobView(record=self.record, progress=_merge([j.snapshot for j in self.jobs]))


class JobService:
    """Creates, runs, lists, cancels and streams jobs; keeps them in a JobStore."""

    def __init__(
        self,
        *,
        images: ImageService,
        store: JobStore,
        ttl_s: float,
        previews: PreviewPolicy | None = None,
        webhooks: Any = None,  # imagine.jobs.webhooks.WebhookSender
        render: Callable[[JobView], dict[str, Any]] = lambda view: view.record.to_dict(),
        metrics: Any = None,
        relay: Any = None,  # imagine.jobs.relay.RedisJobRelay: jobs of other replicas
    ) -> None:
        self.images = images
        self.store = store
        self._ttl_s = ttl_s
        self._previews = previews
        self._webhooks = webhooks
        self._render = render
        self._metrics = metrics
        self._relay = relay
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle

    async def start(self) -> int:
        """Queue again every job the store holds as queued or running (a restart or crash
        interrupted them); start the expiry sweep (which, with a relay, also takes over the
        jobs of replicas that died). Returns how many were queued again."""
        again = await self._requeue()
        if self._relay is not None:
            await self._relay.start(self._cancel_here, owned=lambda: list(self._live))
        self._spawn(self._sweep())
        return again

    async def _requeue(self) -> int:
        again = 0
        unfinished = [r for r in await self.store.unfinished() if r.id not in self._live]
        if self._relay is not None:  # replicas share the store: only jobs nobody runs now
            free = set(await self._relay.take_over(unfinished))
            unfinished = [r for r in unfinished if r.id in free]
        for record in unfinished:
            record = replace(
                record, state=JobState.QUEUED, logs=record.logs + "queued again (restart)\n"
            )
            try:
                requests = [GenerationRequest.from_dict(r) for r in record.requests]
                live = self._launch(record, requests, previews=True, force=True)
                live.accepted.set_result(True)
                again += 1
            except ImagineError as exc:
                log.error("job %s cannot run again: %s", record.id, exc.message)
                await self._end(record, JobState.FAILED, error=exc)
        if again:
            log.info("queued %d unfinished job(s) again", again)
        return again

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._relay is not None:
            await self._relay.close()
        await self.store.close()

    # --- commands

    async def create(
        self,
        *,
        owner: str,
        client_id: str,
        requests: Sequence[GenerationRequest],
        input: dict[str, Any],
        webhook: str | None = None,
        webhook_events_filter: Sequence[str] = (),
        idempotency_key: str | None = None,
        previews: bool = True,
        api: str = "replicate",
        base_url: str = "",
    ) -> JobView:
        """Admit the images, write the job, return its view. Raises what Engine.submit raises
        (Overloaded, ModelLoadFailed, InvalidRequest): then nothing was accepted. A repeated
        `idempotency_key` of the same owner returns the first job instead."""
        record = JobRecord(
            id=new_job_id(),
            owner=owner,
            model_id=requests[0].model_id,
            input=input,
            requests=[asdict(r) for r in requests],
            webhook=webhook,
            webhook_events_filter=list(webhook_events_filter),
            idempotency_key=idempotency_key,
            api=api,
            base_url=base_url,
            logs="queued\n",
        )
        live = self._launch(record, list(requests), previews=previews, client_id=client_id)
        try:
            stored = await self.store.create(record)
        except BaseException:
            self._abandon(live)
            raise
        if stored.id != record.id:  # an idempotent retry: the first job stands
            self._abandon(live)
            return await self.get(stored.id, owner=owner)
        live.accepted.set_result(True)
        self._count("created")
        return live.view()

    async def keep(
        self,
        *,
        owner: str,
        requests: Sequence[GenerationRequest],
        images: Sequence[EncodedImage],
        input: dict[str, Any],
        api: str,
        base_url: str = "",
    ) -> JobRecord:
        """Store images another API made as a finished job, so they can be downloaded by URL
        (`output`) until the job's TTL passes (OpenAI's `response_format: url`)."""
        now = time.time()
        record = JobRecord(
            id=new_job_id(),
            owner=owner,
            model_id=requests[0].model_id,
            input=input,
            requests=[asdict(r) for r in requests],
            api=api,
            base_url=base_url,
            started_at=now,
            logs="generated\n",
        )
        await self.store.create(record)
        names = []
        for index, (request, image) in enumerate(zip(requests, images, strict=True)):
            name = f"{index}.{request.output_format}"
            await self.store.put_output(record.id, name, image.body)
            names.append(name)
        return await self._end(replace(record, outputs=names), JobState.SUCCEEDED)

    async def cancel(self, job_id: str, *, owner: str | None) -> JobView:
        """Cancel a queued or running job (queued: removed; running: stops at the next step);
        a finished one is returned unchanged. Raises JobNotFound, JobExpired."""
        view = await self.get(job_id, owner=owner)
        live = self._live.get(job_id)
        if live is not None:
            for job in live.jobs:
                job.cancel()
            await live.done.wait()
            return live.view()
        if self._relay is not None and not view.state.terminal:
            # another replica runs it: ask it, and answer once the job has ended there
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_REMOTE_CANCEL_S):
                    async for seen in self._relayed(job_id, owner, then=self._relay_cancel):
                        view = seen
            return view
        return view

    async def _relay_cancel(self, job_id: str) -> None:
        await self._relay.request_cancel(job_id)

    def _cancel_here(self, job_id: str) -> None:
        """A cancel request from another replica: cancel the job if it runs here."""
        live = self._live.get(job_id)
        if live is not None:
            for job in live.jobs:
                job.cancel()

    # --- queries

    async def get(self, job_id: str, *, owner: str | None) -> JobView:
        """Raises JobNotFound (also for another owner's job), JobExpired."""
        live = self._live.get(job_id)
        record = live.record if live is not None else await self.store.get(job_id)
        if record is None or (owner is not None and record.owner != owner):
            raise JobNotFound(f"no job with id {job_id[:64]!r}")
        self._check_expiry(record)
        return live.view() if live is not None else JobView(record=record)

    async def list(
        self, *, owner: str | None, cursor: str | None, limit: int
    ) -> tuple[list[JobView], str | None]:
        try:
            records, next_cursor = await self.store.list(owner=owner, before=cursor, limit=limit)
        except InvalidRequest:
            raise InvalidRequest(
                "cursor: not a cursor this server gave out (use the `next` URL of a page)",
                field="cursor",
            ) from None
        views = []
        for record in records:
            live = self._live.get(record.id)
            views.append(live.view() if live is not None else JobView(record=record))
        return views, next_cursor

    async def wait(self, job_id: str, *, owner: str | None, timeout_s: float) -> JobView:
        """The view once the job has ended or `timeout_s` has passed, whichever is first."""
        view = await self.get(job_id, owner=owner)
        live = self._live.get(job_id)
        if live is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.done.wait(), timeout_s)
            return live.view()
        if self._relay is not None and not view.state.terminal:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    async for seen in self._relayed(job_id, owner):
                        view = seen
        return view

    async def events(self, job_id: str, *, owner: str | None) -> AsyncIterator[JobView]:
        """The current view, then every change, ending after the job ends. Raises JobNotFound
        and JobExpired here, before the first view (a stream can then answer with an error)."""
        view = await self.get(job_id, owner=owner)
        live = self._live.get(job_id)
        if live is not None and live.views is not None:
            return live.views.subscribe()
        if self._relay is not None and not view.state.terminal:
            return self._relayed(job_id, owner)  # another replica runs it
        return _once(view)

    async def _relayed(
        self, job_id: str, owner: str | None, *, then: Any = None
    ) -> AsyncIterator[JobView]:
        """The views of a job another replica runs, until a terminal one (RedisJobRelay.views;
        `then(job_id)` runs once subscribed)."""

        async def stored() -> JobRecord:
            return (await self.get(job_id, owner=owner)).record

        async for record, progress in self._relay.views(job_id, stored, then=then):
            yield JobView(record=record, progress=progress)

    async def output(self, job_id: str, name: str) -> bytes:
        """A stored result file. Raises JobNotFound, JobExpired."""
        record = await self.store.get(job_id)
        if record is None or name not in record.outputs:
            raise JobNotFound(f"no output {name[:32]!r} for job {job_id[:64]!r}")
        self._check_expiry(record)
        data = await self.store.get_output(job_id, name)
        if data is None:
            raise JobNotFound(f"no output {name[:32]!r} for job {job_id[:64]!r}")
        return data

    def _check_expiry(self, record: JobRecord) -> None:
        """Raises JobExpired once the TTL has passed, even before the sweep deletes the files."""
        if record.expires_at is not None and record.expires_at <= time.time():
            raise JobExpired(f"job {record.id} ended over {self._ttl_s:g} s ago; results deleted")

    def preview(self, job_id: str) -> bytes | None:
        live = self._live.get(job_id)
        return live.view().progress.preview if live is not None and live.jobs else None

    # --- running

    def _launch(
        self,
        record: JobRecord,
        requests: list[GenerationRequest],
        *,
        previews: bool,
        client_id: str | None = None,
        force: bool = False,
    ) -> _Live:
        live = _Live(record=record)
        policy = self._previews if previews else None
        try:
            for index, request in enumerate(requests):
                live.jobs.append(
                    self.images.engine.submit(
                        request,
                        client_id=client_id or record.owner,
                        wait_for_model=True,
                        previews=policy,
                        job_id=f"{record.id}-{index}",
                        force=force,
                    )
                )
        except BaseException:
            self._abandon(live)
            raise
        live.views = Broadcast(live.view())
        self._live[record.id] = live
        if self._relay is not None:
            self._relay.claim(record.id)
        self._spawn(self._run(live))
        for job in live.jobs:
            self._spawn(self._follow(live, job))
        return live

    def _abandon(self, live: _Live) -> None:
        if not live.accepted.done():
            live.accepted.set_result(False)
        for job in live.jobs:
            job.cancel()
        if self._live.get(live.record.id) is live:
            del self._live[live.record.id]

    async def _follow(self, live: _Live, job: Job) -> None:
        """Republish one image's progress as the job's; mark the job running at its start."""
        async for snap in job.events():
            if not await live.accepted:
                return
            record = live.record
            if snap.state is JobState.RUNNING and record.state is JobState.QUEUED:
                live.record = replace(
                    record,
                    state=JobState.RUNNING,
                    started_at=time.time(),
                    attempts=record.attempts + 1,
                    logs=record.logs + "starting\n",
                )
                await self._save(live.record)
                self._webhook(live, "start")
            if live.views is not None and not live.done.is_set():
                live.views.publish(live.view())
                self._webhook(live, "logs")
                if self._relay is not None:
                    self._relay.publish(live.record, live.view().progress)

    async def _run(self, live: _Live) -> None:
        outcomes = await asyncio.gather(*(j.wait() for j in live.jobs), return_exceptions=True)
        if not await live.accepted:
            return
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        record = live.record
        try:
            if not errors:
                names = []
                for index, result in enumerate(outcomes):
                    image = await self.images.encode(result)  # type: ignore[arg-type]
                    name = f"{index}.{result.request.output_format}"  # type: ignore[union-attr]
                    await self.store.put_output(record.id, name, image.body)
                    names.append(name)
                record = replace(live.record, outputs=names)
                await self._end(record, JobState.SUCCEEDED, live=live)
            elif any(isinstance(e, Canceled) for e in errors):
                await self._end(record, JobState.CANCELED, live=live, error=errors[0])
            else:
                await self._end(record, JobState.FAILED, live=live, error=errors[0])
        except Exception as exc:  # the store or the encoder failed: the job fails, loudly
            log.exception("job %s could not be finished", record.id)
            await self._end(record, JobState.FAILED, live=live, error=exc)

    async def _end(
        self,
        record: JobRecord,
        state: JobState,
        *,
        live: _Live | None = None,
        error: BaseException | None = None,
    ) -> JobRecord:
        now = time.time()
        started = record.started_at or now
        message = error.message if isinstance(error, ImagineError) else (str(error) or None)
        metrics = {"queue_time": round(started - record.created_at, 4)}
        if record.started_at is not None:
            metrics["predict_time"] = round(now - record.started_at, 4)
        final = replace(
            record,
            state=state,
            completed_at=now,
            expires_at=now + self._ttl_s,
            error=message if state is not JobState.SUCCEEDED else None,
            error_code=error.code if isinstance(error, ImagineError) else None,
            metrics=metrics,
            logs=record.logs + f"{state}\n",
        )
        if not await self.store.finish(final):
            log.warning("job %s had already ended; this run's outcome is dropped", record.id)
        elif self._relay is not None:
            self._relay.publish(final, None)
        self._count(str(state))
        if live is not None:
            live.record = final
            live.done.set()
            if live.views is not None:
                live.views.close(live.view())
            if state is JobState.SUCCEEDED:
                self._webhook(live, "output")
            self._webhook(live, "completed")
            self._live.pop(record.id, None)
        return final

    async def _save(self, record: JobRecord) -> None:
        try:
            await self.store.save(record)
        except Exception:
            log.exception("saving job %s failed", record.id)

    def _webhook(self, live: _Live, event: str) -> None:
        record = live.record
        if self._webhooks is None or not record.webhook:
            return
        self._webhooks.send(
            record.id,
            record.webhook,
            event,
            self._render(live.view()),
            record.webhook_events_filter,
        )

    def _count(self, state: str) -> None:
        if self._metrics is not None:
            self._metrics.jobs.labels(state=state).inc()

    async def _sweep(self) -> None:
        while True:
            try:
                expired = await self.store.expire(time.time())
                if expired:
                    log.info("deleted the results of %d expired job(s)", expired)
            except Exception:
                log.exception("job expiry failed")
            if self._relay is not None:  # a replica that died leaves its jobs to the others
                try:
                    await self._requeue()
                except Exception:
                    log.exception("taking over jobs of other replicas failed")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # close() cancelled a Redis call, which raised it as an error caught above
                raise asyncio.CancelledError
            await asyncio.sleep(min(_EXPIRY_INTERVAL_S, max(1.0, self._ttl_s / 4)))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _once(view: JobView) -> AsyncIterator[JobView]:
    yield view


def _merge(snaps: list[JobSnapshot]) -> JobSnapshot | None:
    """One progress for a job's images (they usually share a batch): the slowest one's."""
    if not snaps:
        return None
    running = [s for s in snaps if s.state is JobState.RUNNING]
    queued = [s for s in snaps if s.state is JobState.QUEUED]
    positions = [s.position for s in queued if s.position is not None]
    etas = [s.eta_s for s in snaps if s.eta_s is not None]
    first = snaps[0]
    return JobSnapshot(
        state=JobState.RUNNING if running else first.state,
        position=min(positions) if positions and not running else None,
        step=min(s.step for s in snaps),
        total=max(s.total for s in snaps),
        eta_s=max(etas) if etas else None,
        preview=first.preview,
        preview_step=first.preview_step,
    )
