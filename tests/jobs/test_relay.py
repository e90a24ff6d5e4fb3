"""Two replicas sharing a real Redis job store: a job runs where it was created, and the other
replica streams its progress, waits for it and cancels it through imagine.jobs.relay.

Each replica is a JobService over imagine's Engine and the fake manager (tests/engine), so the
steps are real engine events; only the pipeline is fake.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from imagine.engine.engine import Engine
from imagine.jobs.record import JobRecord, JobState
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
async def replica(
    url: str, manager: FakeManager, *, ttl_s: float = 3600, lease_s: int = 30
) -> AsyncIterator[JobService]:
    settings = Settings(preload=[], batch_wait_ms=0.0, max_request_s=0)
    engine = Engine(settings=settings, manager=manager)
    jobs = JobService(
        images=ImageService(settings=settings, engine=engine),
        store=RedisJobStore(url=url, prefix="relay-test:"),
        ttl_s=ttl_s,  # the sweep (and take-over) runs every ttl_s / 4, at least every 1 s
        relay=RedisJobRelay(url=url, prefix="relay-test:", lease_s=lease_s),
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


async def test_a_job_is_taken_over_once_and_only_when_nobody_holds_it(redis_url: str) -> None:
    def record(age_s: float) -> JobRecord:
        return JobRecord(
            id=f"j-{uuid.uuid4().hex}",
            owner="o",
            model_id="m",
            input={},
            requests=[],
            created_at=time.time() - age_s,
        )

    first = RedisJobRelay(url=redis_url, prefix="relay-test:")
    second = RedisJobRelay(url=redis_url, prefix="relay-test:")
    try:
        orphan, young = record(age_s=100), record(age_s=0)
        assert await first.take_over([orphan, young]) == [orphan.id]
        assert await second.take_over([orphan]) == []  # leased by the first now
    finally:
        await first.close()
        await second.close()


async def test_the_job_of_a_replica_that_died_runs_on_another_once(redis_url: str) -> None:
    async with replica(redis_url, FakeManager(), ttl_s=4, lease_s=1) as survivor:
        held = FakeManager(hold_batches=True)
        async with replica(redis_url, held, lease_s=1) as doomed:
            view = await doomed.create(
                owner="o", client_id="c", requests=[make_request(steps=50)], input={}
            )
            async for seen in await doomed.events(view.record.id, owner="o"):
                if seen.state is JobState.RUNNING:
                    break
            # as a replica that dies: its job service stops without finishing the job (the
            # store still says it runs) and stops renewing the lease
            await doomed.close()
            held.release_batch()  # (lets its engine stop; nobody records that outcome)
        done = await survivor.wait(view.record.id, owner="o", timeout_s=30)
        assert done.state is JobState.SUCCEEDED, done.record
        assert done.record.logs.count("queued again") == 1
        assert done.record.logs.count("succeeded") == 1


def test_a_view_survives_the_wire() -> None:
    from imagine.engine.job import JobSnapshot

    record = JobRecord(id="j", owner="o", model_id="m", input={"prompt": "p"}, requests=[])
    snap = JobSnapshot(JobState.RUNNING, step=3, total=9, eta_s=1.5, preview=b"\xff\xd8jpeg")
    assert view_from_json(view_to_json(record, snap)) == (record, snap)
    assert view_from_json(view_to_json(record, None)) == (record, None)
