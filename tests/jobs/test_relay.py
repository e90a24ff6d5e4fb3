"""Two replicas sharing a real Redis job store: a job runs where it was created, and the other
replica streams its progress, waits for it and cancels it through imagine.jobs.relay.

Each replica is a JobService over imagine's Engine and the fake manager (tests/engine), so the
steps are real engine events; only the pipeline is fake.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from imagine.engine.engine import Engine
from imagine.jobs.record import JobState
from imagine.jobs.redis_store import RedisJobStore
from imagine.jobs.relay import RedisJobRelay, view_from_json, view_to_json
from imagine.jobs.service import JobService
from imagine.service import ImageService
from imagine.settings import Settings
from tests.engine.fake_manager import FakeManager, make_request
from tests.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@asynccontextmanager
async def replica(url: str, manager: FakeManager) -> AsyncIterator[JobService]:
    settings = Settings(preload=[], batch_wait_ms=0.0, max_request_s=0)
    engine = Engine(settings=settings, manager=manager)
    jobs = JobService(
        images=ImageService(settings=settings, engine=engine),
        store=RedisJobStore(url=url, prefix="relay-test:"),
        ttl_s=3600,
        relay=RedisJobRelay(url=url, prefix="relay-test:"),
    )
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.close()
        await engine.close()


async def test_another_replica_streams_the_progress_and_cancels_the_job(redis_url: str) -> None:
    owner_manager = FakeManager(hold_batches=True)
    async with (
        replica(redis_url, owner_manager) as owner,
        replica(redis_url, FakeManager()) as other,
    ):
        view = await owner.create(
            owner="o", client_id="c", requests=[make_request(steps=100000)], input={}
        )
        job_id = view.record.id
        steps: list[int] = []
        views = await other.events(job_id, owner="o")
        async for seen in views:
            if seen.progress is not None and seen.progress.step:
                steps.append(seen.progress.step)
                if len(steps) == 3:
                    break
        assert steps == sorted(steps) and steps[0] >= 1
        await views.aclose()  # type: ignore[attr-defined]

        canceled = await other.cancel(job_id, owner="o")
        assert canceled.state is JobState.CANCELED
        # the owner canceled its own engine job: its view and the store agree
        assert (await owner.get(job_id, owner="o")).state is JobState.CANCELED
        assert (await owner.store.get(job_id)).state is JobState.CANCELED  # type: ignore[union-attr]


async def test_another_replica_waits_for_the_end(redis_url: str) -> None:
    async with (
        replica(redis_url, FakeManager(hold_batches=True)) as owner,
        replica(redis_url, FakeManager()) as other,
    ):
        manager = owner.images.engine._manager  # type: ignore[attr-defined]
        view = await owner.create(owner="o", client_id="c", requests=[make_request()], input={})
        waiting = asyncio.create_task(other.wait(view.record.id, owner="o", timeout_s=30))
        await asyncio.wait_for(manager.started.get(), 10)
        manager.release_batch()
        done = await waiting
        assert done.state is JobState.SUCCEEDED and done.record.outputs == ["0.png"]


async def test_a_starting_replica_takes_over_only_jobs_nobody_runs(redis_url: str) -> None:
    async with replica(redis_url, FakeManager(hold_batches=True)) as owner:
        running = await owner.create(
            owner="o", client_id="c", requests=[make_request(steps=100000)], input={}
        )
        starting = RedisJobRelay(url=redis_url, prefix="relay-test:")
        try:
            # the owner's lease is sent in the background: it is there once the job runs
            async for view in await owner.events(running.record.id, owner="o"):
                if view.state is JobState.RUNNING:
                    break
            orphan = f"orphan-{uuid.uuid4().hex}"  # unfinished, its owner gone
            assert await starting.take_over([running.record.id, orphan]) == [orphan]
            assert await starting.take_over([orphan]) == []  # taken once only
        finally:
            await starting.close()
        await owner.cancel(running.record.id, owner="o")


def test_a_view_survives_the_wire() -> None:
    from imagine.engine.job import JobSnapshot
    from imagine.jobs.record import JobRecord

    record = JobRecord(id="j", owner="o", model_id="m", input={"prompt": "p"}, requests=[])
    snap = JobSnapshot(JobState.RUNNING, step=3, total=9, eta_s=1.5, preview=b"\xff\xd8jpeg")
    assert view_from_json(view_to_json(record, snap)) == (record, snap)
    assert view_from_json(view_to_json(record, None)) == (record, None)
