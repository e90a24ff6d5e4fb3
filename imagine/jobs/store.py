"""The job store interface. Backends: `sqlite_store.py` (default: one file, WAL, images as files
beside it) and `redis_store.py` (replicas that share state). Same contract, same tests.

Every method is async and never blocks the event loop (SQLite work runs in a thread).
"""

from __future__ import annotations

from typing import Protocol

from imagine.errors import JobExpired
from imagine.jobs.record import JobRecord

__all__ = ["JobExpired", "JobStore"]


class JobStore(Protocol):
    async def create(self, record: JobRecord) -> JobRecord:
        """Write a new job durably before it is acknowledged. When `record.idempotency_key` is
        set and the same owner already created a job with that key (and it has not expired),
        nothing is written and that existing record is returned instead."""

    async def save(self, record: JobRecord) -> None:
        """Overwrite the mutable fields of an existing job (state, times, error, outputs, logs,
        metrics, attempts, expires_at). Never moves a terminal job to another state (a late
        "running" must not reopen a canceled job): such a save is ignored."""

    async def finish(self, record: JobRecord) -> bool:
        """Save `record` (whose state is terminal) only if the stored job is not terminal yet;
        True when this call finished it. A job never completes twice."""

    async def get(self, job_id: str) -> JobRecord | None:
        """The job, or None when no such id was ever stored. Raises JobExpired for a job whose
        results were deleted by `expire` (a tombstone remains)."""

    async def list(
        self, *, owner: str | None, before: str | None, limit: int
    ) -> tuple[list[JobRecord], str | None]:
        """Jobs newest first (by created_at, then id), only `owner`'s unless None, starting
        after the cursor `before`; returns the page and the cursor of the next page (None at
        the end). Expired jobs are not listed."""

    async def unfinished(self) -> list[JobRecord]:
        """Every queued or running job, oldest first (to queue again after a restart)."""

    async def put_output(self, job_id: str, name: str, data: bytes) -> None:
        """Store one result file (e.g. "0.png") of a job."""

    async def get_output(self, job_id: str, name: str) -> bytes | None:
        """A stored result file, or None. Raises JobExpired when the job has expired."""

    async def expire(self, now: float) -> int:
        """Delete the files and inputs of jobs whose `expires_at` <= now, leaving a tombstone
        (id, owner) so `get` raises JobExpired; returns how many jobs expired."""

    async def close(self) -> None:
        """Release the connection / file handles."""
