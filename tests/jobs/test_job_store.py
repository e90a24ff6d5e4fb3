"""The JobStore contract, run against both backends (SQLite in tmp_path, a real redis-server).

Each backend-specific test covers what only it promises: SQLite survives a restart, Redis
replicas racing on one job agree. Time is passed explicitly to `expire`, never slept on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from imagine.errors import InvalidRequest, JobExpired
from imagine.jobs.record import JobRecord, JobState, new_job_id
from imagine.jobs.redis_store import RedisJobStore
from imagine.jobs.sqlite_store import SQLiteJobStore
from imagine.jobs.store import JobStore
from tests.redis_server import redis_server

TOMBSTONE_TTL = 3600.0
NOW = time.time()  # realistic times: Redis output TTLs are relative to its own clock


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@dataclass
class Backend:
    store: JobStore
    output_present: Callable[[str, str], Awaitable[bool]]  # inspects the backend directly
    open_another: Callable[[], JobStore]  # a second "replica" / connection on the same data


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        data = tmp_path / "data"
        store: JobStore = SQLiteJobStore(data_dir=data, tombstone_ttl_s=TOMBSTONE_TTL)

        async def present(job_id: str, name: str) -> bool:
            return (data / "outputs" / job_id / name).exists()

        yield Backend(store, present, lambda: store)
        await store.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def make() -> RedisJobStore:
        return RedisJobStore(url=url, prefix=prefix, tombstone_ttl_s=TOMBSTONE_TTL)

    store = make()
    raw = aioredis.Redis.from_url(url)

    async def present_in_redis(job_id: str, name: str) -> bool:
        return bool(await raw.exists(f"{prefix}out:{job_id}:{name}"))

    yield Backend(store, present_in_redis, make)
    await store.close()
    await raw.aclose()


def job(owner: str = "alice", *, created_at: float | None = None, **kw: object) -> JobRecord:
    fields: dict[str, object] = {
        "input": {"prompt": "a red square"},
        "requests": [{"prompt": "a red square", "seed": 1}],
        **kw,
    }
    return JobRecord(
        id=new_job_id(),
        owner=owner,
        model_id="tiny/sd",
        created_at=NOW if created_at is None else created_at,
        **fields,  # type: ignore[arg-type]
    )


def done(record: JobRecord, state: JobState = JobState.SUCCEEDED, ttl: float = 60) -> JobRecord:
    return replace(record, state=state, completed_at=NOW + 1, expires_at=NOW + 1 + ttl)


async def test_create_get_round_trips_every_field(backend: Backend) -> None:
    store = backend.store
    assert await store.get(new_job_id()) is None
    assert await store.get("idx:all") is None  # not a job id (a Redis index key)
    assert await store.get("../x") is None
    full = JobRecord(
        id=new_job_id(),
        owner="tok-digest",
        model_id="tiny/sdxl",
        input={"prompt": "p", "parameters": {"num_inference_steps": 4}},
        requests=[{"prompt": "p", "seed": 7}, {"prompt": "p", "seed": 8}],
        state=JobState.RUNNING,
        created_at=1718000000.123456,
        started_at=1718000001.5,
        completed_at=None,
        expires_at=None,
        error="e",
        error_code="generation_failed",
        outputs=["0.png"],
        logs="step 1/4\n",
        webhook="https://example.test/hook",
        webhook_events_filter=["completed"],
        idempotency_key="idem-1",
        metrics={"predict_time": 0.25},
        attempts=2,
        api="openai",
    )
    assert await store.create(full) == full
    assert await store.get(full.id) == full
    with pytest.raises(ValueError):  # an id is never silently reused
        await store.create(replace(full, idempotency_key=None, owner="bob"))
    assert await store.get(full.id) == full


async def test_idempotency_key_returns_first_job_per_owner(backend: Backend) -> None:
    store = backend.store
    first = await store.create(job(idempotency_key="k"))
    again = await store.create(job(idempotency_key="k", input={"prompt": "different"}))
    assert again == first
    other_owner = await store.create(job("bob", idempotency_key="k"))
    assert other_owner.id != first.id and other_owner.owner == "bob"
    page, _ = await store.list(owner="alice", before=None, limit=10)
    assert [r.id for r in page] == [first.id]  # the duplicate wrote nothing


async def test_concurrent_creates_with_one_key_agree(backend: Backend) -> None:
    other = backend.open_another()
    try:
        a, b = await asyncio.gather(
            backend.store.create(job(idempotency_key="race")),
            other.create(job(idempotency_key="race")),
        )
        assert a.id == b.id
    finally:
        if other is not backend.store:
            await other.close()


async def test_save_updates_mutable_fields(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(job())
    running = replace(rec, state=JobState.RUNNING, started_at=NOW + 0.5, attempts=1, logs="x")
    await store.save(running)
    assert await store.get(rec.id) == running
    await store.save(replace(running, owner="mallory"))  # not a mutable field: ignored
    assert (await store.get(rec.id)).owner == "alice"  # type: ignore[union-attr]


async def test_finish_only_once(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(job())
    succeeded = done(rec, JobState.SUCCEEDED)
    assert await store.finish(succeeded) is True
    assert await store.finish(done(rec, JobState.FAILED)) is False
    assert await store.get(rec.id) == succeeded
    # A worker's late "running" save must not resurrect the finished job either.
    await store.save(replace(rec, state=JobState.RUNNING))
    assert (await store.get(rec.id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert await store.finish(done(job())) is False  # unknown job


async def test_concurrent_finish_exactly_one_wins(backend: Backend) -> None:
    other = backend.open_another()  # Redis: a second replica with its own connection
    try:
        for _ in range(10):
            rec = await backend.store.create(job())
            results = await asyncio.gather(
                backend.store.finish(done(rec, JobState.SUCCEEDED)),
                other.finish(done(rec, JobState.CANCELED)),
            )
            assert sorted(results) == [False, True]
            stored = await other.get(rec.id)
            winner = JobState.SUCCEEDED if results[0] else JobState.CANCELED
            assert stored is not None and stored.state is winner
    finally:
        if other is not backend.store:
            await other.close()


async def test_list_newest_first_with_cursor_owner_filter(backend: Backend) -> None:
    store = backend.store
    # Pairs share created_at, so page boundaries fall inside ties (ordered by id then).
    mine = [await store.create(job(created_at=NOW + i // 2)) for i in range(7)]
    await store.create(job("bob", created_at=NOW + 2.5))
    expected = sorted(mine, key=lambda r: (r.created_at, r.id), reverse=True)
    pages, cursor = [], None
    while True:
        page, cursor = await store.list(owner="alice", before=cursor, limit=3)
        pages.append(page)
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [r.id for p in pages for r in p] == [r.id for r in expected]
    everyone, nxt = await store.list(owner=None, before=None, limit=100)
    assert len(everyone) == 8 and nxt is None and everyone[1].owner == "bob"
    six, nxt = await store.list(owner="alice", before=None, limit=7)
    assert len(six) == 7 and nxt is None  # an exact fit has no next page
    with pytest.raises(InvalidRequest):
        await store.list(owner=None, before="not a cursor", limit=3)


async def test_unfinished_oldest_first_without_terminal(backend: Backend) -> None:
    store = backend.store
    running = await store.create(job(created_at=NOW + 2))
    await store.save(replace(running, state=JobState.RUNNING))
    queued = await store.create(job(created_at=NOW + 1))
    finished = await store.create(job(created_at=NOW))
    await store.finish(done(finished, JobState.FAILED))
    assert [r.id for r in await store.unfinished()] == [queued.id, running.id]
    await store.finish(done(running))
    assert [r.id for r in await store.unfinished()] == [queued.id]


async def test_outputs_round_trip(backend: Backend) -> None:
    store = backend.store
    rec = await store.create(job())
    png = bytes(range(256)) * 100
    await store.put_output(rec.id, "0.png", png)
    await store.put_output(rec.id, "0.png", png[::-1])  # overwrite
    assert await store.get_output(rec.id, "0.png") == png[::-1]
    assert await store.get_output(rec.id, "1.png") is None
    assert await store.get_output(rec.id, "../jobs.sqlite3") is None
    with pytest.raises(ValueError):
        await store.put_output(rec.id, "../evil", b"x")


async def test_expire_tombstones_then_forgets(backend: Backend) -> None:
    store = backend.store
    old = await store.create(job(idempotency_key="k"))
    await store.put_output(old.id, "0.png", b"img")
    await store.finish(done(old, ttl=60))  # expires_at = NOW + 61
    young = await store.create(job())
    await store.finish(done(young, ttl=TOMBSTONE_TTL + 100))  # expires_at = NOW + 3701
    live = await store.create(job())

    assert await store.expire(NOW + 60) == 0
    assert await store.expire(NOW + 61) == 1
    with pytest.raises(JobExpired):
        await store.get(old.id)
    with pytest.raises(JobExpired):
        await store.get_output(old.id, "0.png")
    with pytest.raises(JobExpired):
        await store.put_output(old.id, "1.png", b"late")
    assert not await backend.output_present(old.id, "0.png")
    listed, _ = await store.list(owner=None, before=None, limit=10)
    assert {r.id for r in listed} == {young.id, live.id}
    assert await store.finish(done(old, JobState.FAILED)) is False
    assert await store.expire(NOW + 62) == 0  # already a tombstone
    # The expired job's idempotency key is free again.
    reused = await store.create(job(idempotency_key="k"))
    assert reused.id != old.id

    assert await store.expire(NOW + 61 + TOMBSTONE_TTL - 1) == 0
    with pytest.raises(JobExpired):
        await store.get(old.id)  # the tombstone is kept for tombstone_ttl_s
    assert await store.expire(NOW + 61 + TOMBSTONE_TTL + 1) == 0
    assert await store.get(old.id) is None  # then forgotten
    assert await store.expire(NOW + 3701) == 1
    with pytest.raises(JobExpired):
        await store.get(young.id)
    assert await store.get(live.id) == live


async def test_sqlite_survives_restart(tmp_path: Path) -> None:
    store = SQLiteJobStore(data_dir=tmp_path / "nested" / "data")
    a, b = await asyncio.gather(store.create(job()), store.create(job(created_at=NOW + 1)))
    await store.put_output(a.id, "0.png", b"png-bytes")
    finished = done(a)
    await store.finish(finished)
    await store.close()
    with pytest.raises(RuntimeError):
        await store.get(a.id)

    with contextlib.closing(sqlite3.connect(tmp_path / "nested" / "data" / "jobs.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # persists in the file
    reopened = SQLiteJobStore(data_dir=tmp_path / "nested" / "data")
    try:
        assert await reopened.get(a.id) == finished
        assert await reopened.get_output(a.id, "0.png") == b"png-bytes"
        assert [r.id for r in await reopened.unfinished()] == [b.id]
        page, _ = await reopened.list(owner=None, before=None, limit=10)
        assert [r.id for r in page] == [b.id, a.id]
    finally:
        await reopened.close()


async def test_redis_ttls_and_replicas_share_jobs(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one = RedisJobStore(url=redis_url, prefix=prefix, tombstone_ttl_s=TOMBSTONE_TTL)
    two = RedisJobStore(url=redis_url, prefix=prefix, tombstone_ttl_s=TOMBSTONE_TTL)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        rec = await one.create(job())
        await one.put_output(rec.id, "0.png", b"img")
        assert await raw.pttl(f"{prefix}out:{rec.id}:0.png") == -1  # no TTL while running
        # times from now, not from the module's import (the suite may run for minutes before)
        now = time.time()
        finished = replace(
            rec, state=JobState.SUCCEEDED, completed_at=now + 1, expires_at=now + 601
        )
        await two.finish(finished)
        assert await one.get(rec.id) == finished
        # Safety-net TTL on outputs: about expires_at - now + 60 = 661 s.
        assert 600_000 < await raw.pttl(f"{prefix}out:{rec.id}:0.png") <= 662_000
        assert await two.expire(now + 601) == 1
        assert 0 < await raw.pttl(prefix + rec.id) <= TOMBSTONE_TTL * 1000
        assert await raw.exists(f"{prefix}outs:{rec.id}") == 0
    finally:
        await one.close()
        await two.close()
        await raw.aclose()
