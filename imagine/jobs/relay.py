"""Progress and cancellation of jobs across replicas that share a Redis job store.

A job runs in the replica that created it (its JobService holds the engine Jobs). Another
replica asked to stream, wait for or cancel that job has only the stored record, which says
neither step, ETA nor preview, and cancelling there would change nothing. The owner therefore
publishes every view of its jobs, and every replica listens for cancel requests:

    owner:     view changes → PUBLISH <prefix>events:<job id>   (JSON; preview in base64)
    follower:  SUBSCRIBE <prefix>events:<job id> → views until a terminal one
    anyone:    PUBLISH <prefix>cancel <job id> → the owner cancels it
    owner:     SET <prefix>lease:<job id> EX 30, renewed every 10 s while the job runs there
    any replica, at start and then at each expiry sweep: takes over (SET NX) the unfinished
               jobs whose lease has lapsed — their owner died or stopped — and runs them; jobs
               that live replicas run are never run twice

Publishing is fire-and-forget through one queue (in order; the oldest dropped past 1,024), so a
slow or frozen Redis never holds a job up; each Redis call has a timeout. Pub/sub loses what
nobody listens to, which is fine: a follower reads the store first and then only needs changes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from imagine.engine.job import JobSnapshot
from imagine.jobs.record import JobRecord, JobState

__all__ = ["RedisJobRelay", "view_from_json", "view_to_json"]

log = logging.getLogger(__name__)

_QUEUE = 1024
_LEASE_S = 30
# A follower reads the store when no view came for this long.
_QUIET_S = 5.0


def view_to_json(record: JobRecord, progress: JobSnapshot | None) -> str:
    snap = None
    if progress is not None:
        snap = {
            "state": str(progress.state),
            "position": progress.position,
            "step": progress.step,
            "total": progress.total,
            "eta_s": progress.eta_s,
            "preview": base64.b64encode(progress.preview).decode() if progress.preview else None,
            "preview_step": progress.preview_step,
        }
    return json.dumps({"record": record.to_dict(), "progress": snap})


def view_from_json(text: str | bytes) -> tuple[JobRecord, JobSnapshot | None]:
    data = json.loads(text)
    snap = data["progress"]
    progress = None
    if snap is not None:
        preview = snap.pop("preview")
        progress = JobSnapshot(
            **{**snap, "state": JobState(snap["state"])},
            preview=base64.b64decode(preview) if preview else None,
        )
    return JobRecord.from_dict(data["record"]), progress


class RedisJobRelay:
    """Redis pub/sub for job views and cancel requests (see the module docstring)."""

    def __init__(
        self,
        *,
        url: str,
        prefix: str = "imagine:job:",
        timeout_s: float = 2.0,
        lease_s: int = _LEASE_S,
    ) -> None:
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._url = url
        self._p = prefix
        self._timeout_s = timeout_s
        self._lease_s = lease_s
        # ("publish", channel, message) or ("lease", key, ""), sent in order by one task
        self._outbox: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(
        self, on_cancel: Callable[[str], None], owned: Callable[[], Iterable[str]]
    ) -> None:
        """Start sending, calling `on_cancel(job_id)` for cancel requests, and renewing the
        leases of the jobs `owned()` names (those this replica runs)."""
        self._tasks.append(asyncio.create_task(self._send()))
        self._tasks.append(asyncio.create_task(self._listen_cancels(on_cancel)))
        self._tasks.append(asyncio.create_task(self._renew(owned)))

    async def take_over(self, records: Iterable[JobRecord]) -> list[str]:
        """The ids of those unfinished `records` no live replica holds, now leased to this one
        (atomically: two replicas never both take one). A job younger than a lease is left
        alone: its creator may not have sent its lease yet."""
        taken = []
        now = time.time()
        for record in records:
            if now - record.created_at < self._lease_s:
                continue
            async with asyncio.timeout(self._timeout_s):
                acquired = await self._client.set(
                    self._lease(record.id), "1", nx=True, ex=self._lease_s
                )
            if acquired:
                taken.append(record.id)
        return taken

    def claim(self, job_id: str) -> None:
        """Lease a job this replica has just started running (never blocks)."""
        self._queue(("lease", self._lease(job_id), ""))

    def publish(self, record: JobRecord, progress: JobSnapshot | None) -> None:
        """Queue one view of a job this replica runs (never blocks)."""
        self._queue(("publish", f"{self._p}events:{record.id}", view_to_json(record, progress)))

    def _queue(self, item: tuple[str, str, str]) -> None:
        if self._outbox.full():
            self._outbox.get_nowait()  # the oldest: a newer view says more
        self._outbox.put_nowait(item)

    def _lease(self, job_id: str) -> str:
        return f"{self._p}lease:{job_id}"

    async def request_cancel(self, job_id: str) -> None:
        """Ask the replica that runs `job_id` to cancel it. Raises on a Redis failure."""
        async with asyncio.timeout(self._timeout_s):
            await self._client.publish(f"{self._p}cancel", job_id)

    async def views(
        self,
        job_id: str,
        stored: Callable[[], Awaitable[JobRecord]],
        *,
        then: Callable[[str], Awaitable[None]] | None = None,
    ) -> AsyncIterator[tuple[JobRecord, JobSnapshot | None]]:
        """(record, progress) of a job another replica runs: the stored record (read once
        subscribed, so nothing published meanwhile is missed), then each view its owner
        publishes, until a terminal one. With no view for `_QUIET_S` the store is read again
        (the owner may have died, or Redis dropped a message). `then(job_id)` runs once
        subscribed (a cancel request, whose outcome must not be missed)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(self._timeout_s):
                await pubsub.subscribe(f"{self._p}events:{job_id}")
            if then is not None:
                await then(job_id)
            record = await stored()
            yield record, None
            while not record.state.terminal:
                message = await pubsub.get_message(timeout=_QUIET_S)
                if message is not None:
                    record, progress = view_from_json(message["data"])
                    yield record, progress
                    continue
                again = await stored()
                if again != record:
                    record = again
                    yield record, None
        finally:
            await _close(pubsub)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await _close(self._client)

    async def _send(self) -> None:
        while True:
            _raise_if_cancelling()
            kind, key, message = await self._outbox.get()
            if kind == "publish":
                call = self._client.publish(key, message)
            else:
                call = self._client.set(key, "1", ex=self._lease_s)
            try:
                async with asyncio.timeout(self._timeout_s):
                    await call
            except Exception as exc:
                _raise_if_cancelling()
                log.warning("job %s not relayed (%s)", kind, type(exc).__name__)

    async def _renew(self, owned: Callable[[], Iterable[str]]) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            for job_id in list(owned()):
                self.claim(job_id)

    async def _listen_cancels(self, on_cancel: Callable[[str], None]) -> None:
        while True:  # (re)subscribe after a Redis failure
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self._timeout_s):
                    await pubsub.subscribe(f"{self._p}cancel")
                while True:
                    _raise_if_cancelling()
                    message = await pubsub.get_message(timeout=self._timeout_s)
                    if message is not None:
                        on_cancel(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _raise_if_cancelling()
                log.warning("cancel requests not received (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                await _close(pubsub)


async def _close(connection: Any) -> None:
    """Close a client or pub/sub connection, giving up after a second (never the server's
    shutdown waiting on Redis)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await connection.aclose()


def _raise_if_cancelling() -> None:
    """A cancelled Redis call may come back as an error or even as an answer (redis-py 8 does
    not always re-raise the cancellation): a task being cancelled must stop, not go on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
