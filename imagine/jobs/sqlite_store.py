"""The default job store: one SQLite file plus result images as plain files beside it.

A single server needs no other service to keep its jobs across a restart. The database is
`<data_dir>/jobs.sqlite3` (WAL); images are `<data_dir>/outputs/<job_id>/<name>`. sqlite3 blocks,
so one connection lives on one dedicated worker thread and every public method awaits it there:
the event loop never waits on the disk, and the single thread serialises every statement.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from imagine.errors import InvalidRequest, JobExpired
from imagine.jobs.record import JobRecord, JobState

T = TypeVar("T")

# What `save`/`finish` may change; the rest (owner, input, created_at, ...) is fixed at creation.
MUTABLE_FIELDS = ("state", "started_at", "completed_at", "expires_at", "error", "error_code")
MUTABLE_FIELDS += ("outputs", "logs", "metrics", "attempts")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # no "/", no leading "."
_LIVE = (str(JobState.QUEUED), str(JobState.RUNNING))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL, idempotency_key TEXT, record TEXT NOT NULL,
    expired_at REAL  -- set on tombstones: when `expire` deleted the results
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_newest ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_owner_newest ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires_at) WHERE expired_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_tombstones ON jobs (expired_at) WHERE expired_at IS NOT NULL;
PRAGMA user_version = 1;
"""


def valid_name(value: str) -> bool:
    """Job ids and output names become path parts and key parts: nothing else is valid."""
    return _SAFE_NAME.fullmatch(value) is not None


def check_name(value: str, what: str) -> str:
    if not valid_name(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def merge_mutable(stored: JobRecord, update: JobRecord) -> JobRecord:
    return replace(stored, **{f: getattr(update, f) for f in MUTABLE_FIELDS})


def encode_cursor(record: JobRecord) -> str:
    raw = json.dumps([record.created_at, record.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(created_at), check_name(str(job_id), "job id")
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"invalid cursor {cursor!r}", field="before") from exc


def expired_error(job_id: str) -> JobExpired:
    return JobExpired(f"Job {job_id} has expired; its results were deleted")


def _dump(record: JobRecord) -> str:
    return json.dumps(record.to_dict(), separators=(",", ":"))


def _load(text: str) -> JobRecord:
    return JobRecord.from_dict(json.loads(text))


class SQLiteJobStore:
    """JobStore over stdlib sqlite3 (see the module docstring)."""

    def __init__(self, *, data_dir: Path, tombstone_ttl_s: float = 7 * 24 * 3600) -> None:
        self._dir = Path(data_dir)
        self._outputs = self._dir / "outputs"
        self._tombstone_ttl_s = tombstone_ttl_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-jobs-db")
        self._conn: sqlite3.Connection | None = None  # opened lazily, on the worker thread
        self._closed = False

    # -- plumbing: everything below `_run` executes on the single worker thread --------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("job store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed:
                raise RuntimeError("job store is closed")
            self._outputs.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._dir / "jobs.sqlite3", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL only syncs at checkpoints: a power cut can lose commits that
            # were already acknowledged. FULL syncs the WAL on every commit, so a job we
            # answered 201 for is on disk. Writes are one per job state change: cheap enough.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; IMMEDIATE takes the write lock up front so read-then-write
        sequences (idempotency, finish) cannot interleave with another process's."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _row(self, job_id: str) -> tuple[str, float | None] | None:
        sql = "SELECT record, expired_at FROM jobs WHERE id = ?"
        return self._db().execute(sql, (job_id,)).fetchone()

    # -- JobStore ---------------------------------------------------------------------------

    async def create(self, record: JobRecord) -> JobRecord:
        check_name(record.id, "job id")
        return await self._run(self._create, record)

    def _create(self, record: JobRecord) -> JobRecord:
        with self._tx() as db:
            if record.idempotency_key is not None:
                # Tombstones drop their key, so an expired job's key is free to be used again.
                row = db.execute(
                    "SELECT record FROM jobs WHERE owner = ? AND idempotency_key = ?",
                    (record.owner, record.idempotency_key),
                ).fetchone()
                if row is not None:
                    return _load(row[0])
            r = record
            columns = (r.id, r.owner, str(r.state), r.created_at, r.expires_at, r.idempotency_key)
            try:
                db.execute(
                    "INSERT INTO jobs (id, owner, state, created_at, expires_at,"
                    " idempotency_key, record) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*columns, _dump(r)),
                )
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"job {record.id} already exists") from exc
        return record

    async def save(self, record: JobRecord) -> None:
        await self._run(self._update, record, False)

    async def finish(self, record: JobRecord) -> bool:
        if not record.state.terminal:
            raise ValueError(f"finish needs a terminal state, got {record.state}")
        return await self._run(self._update, record, True)

    def _update(self, record: JobRecord, finishing: bool) -> bool:
        with self._tx() as db:
            row = self._row(record.id)
            if row is None or row[1] is not None:
                return False
            merged = merge_mutable(_load(row[0]), record)
            # The condition lives in the UPDATE itself: finish only moves a live job, and save
            # never moves a finished job to another state (a late "running" from a worker must
            # not resurrect a canceled job, which could then complete a second time).
            guard = "state IN (?, ?)" if finishing else "(state IN (?, ?) OR state = ?)"
            params: tuple[Any, ...] = _LIVE if finishing else (*_LIVE, str(merged.state))
            cur = db.execute(
                "UPDATE jobs SET state = ?, expires_at = ?, record = ?"
                f" WHERE id = ? AND expired_at IS NULL AND {guard}",
                (str(merged.state), merged.expires_at, _dump(merged), record.id, *params),
            )
            return cur.rowcount == 1

    async def get(self, job_id: str) -> JobRecord | None:
        if not valid_name(job_id):
            return None
        row = await self._run(self._row, job_id)
        if row is None:
            return None
        if row[1] is not None:
            raise expired_error(job_id)
        return _load(row[0])

    async def list(
        self, *, owner: str | None, before: str | None, limit: int
    ) -> tuple[list[JobRecord], str | None]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        where, params = ["expired_at IS NULL"], []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if before is not None:
            created_at, job_id = decode_cursor(before)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params += [created_at, created_at, job_id]
        sql = (
            f"SELECT record FROM jobs WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        rows = await self._run(lambda: self._db().execute(sql, (*params, limit + 1)).fetchall())
        page = [_load(r[0]) for r in rows[:limit]]
        return page, encode_cursor(page[-1]) if len(rows) > limit else None

    async def unfinished(self) -> list[JobRecord]:
        sql = (
            "SELECT record FROM jobs WHERE state IN (?, ?) AND expired_at IS NULL"
            " ORDER BY created_at, id"
        )
        rows = await self._run(lambda: self._db().execute(sql, _LIVE).fetchall())
        return [_load(r[0]) for r in rows]

    async def put_output(self, job_id: str, name: str, data: bytes) -> None:
        await self._run(
            self._put_output, check_name(job_id, "job id"), check_name(name, "name"), data
        )

    def _put_output(self, job_id: str, name: str, data: bytes) -> None:
        row = self._row(job_id)
        if row is not None and row[1] is not None:
            raise expired_error(job_id)
        folder = self._outputs / job_id
        folder.mkdir(parents=True, exist_ok=True)
        # Temp file + fsync + rename: a reader (or a crash) sees the old file or the whole new
        # one, never a torn image.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # makes the rename itself durable
        finally:
            os.close(dir_fd)

    async def get_output(self, job_id: str, name: str) -> bytes | None:
        if not (valid_name(job_id) and valid_name(name)):
            return None  # a client-supplied "../x" is simply not found
        return await self._run(self._get_output, job_id, name)

    def _get_output(self, job_id: str, name: str) -> bytes | None:
        row = self._row(job_id)
        if row is not None and row[1] is not None:
            raise expired_error(job_id)
        try:
            return (self._outputs / job_id / name).read_bytes()
        except FileNotFoundError:
            return None

    async def expire(self, now: float) -> int:
        return await self._run(self._expire, now)

    def _expire(self, now: float) -> int:
        with self._tx() as db:
            due = db.execute(
                "SELECT id, owner, state, created_at FROM jobs"
                " WHERE expired_at IS NULL AND expires_at <= ?",
                (now,),
            ).fetchall()
            for job_id, owner, state, created_at in due:
                tomb = {"id": job_id, "owner": owner, "state": state, "created_at": created_at}
                db.execute(
                    "UPDATE jobs SET record = ?, expired_at = ?, idempotency_key = NULL"
                    " WHERE id = ?",
                    (json.dumps({**tomb, "expired_at": now}), now, job_id),
                )
            gone = db.execute(
                "DELETE FROM jobs WHERE expired_at IS NOT NULL AND expired_at <= ? RETURNING id",
                (now - self._tombstone_ttl_s,),
            ).fetchall()
        # Files go after the commit: a crash in between leaves unreachable files (get_output
        # sees the tombstone first), never a live job without its images. Purged tombstones
        # sweep their folder again to collect such leftovers.
        for job_id in [row[0] for row in (*due, *gone)]:
            shutil.rmtree(self._outputs / job_id, ignore_errors=True)
        return len(due)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # refuse new calls; those already queued run first (FIFO)

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
