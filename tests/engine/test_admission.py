"""Retry-After and queue ETAs come from the queued requests' own cost (pixels × steps) and the
measured rate of work, so one large request does not inflate every estimate after it."""

from __future__ import annotations

import pytest

from imagine.engine.admission import MAX_RETRY_AFTER_S, ClientRateLimit, RequestQueue
from imagine.engine.cost import WorkRate
from imagine.engine.job import Job
from imagine.errors import Overloaded
from tests.engine.conftest import EngineFactory
from tests.engine.fake_manager import make_request


def _job(size: int, steps: int, seed: int = 0) -> Job:
    request = make_request(seed, width=size, height=size, steps=steps)
    return Job(request, client_id=f"c{seed}", key=(size, steps))


def work(job: Job) -> float:
    return WorkRate().units(job.request)  # a fresh rate: the queues' exponent before calibration


def _queue(capacity: int = 2) -> RequestQueue:
    return RequestQueue(model_id="m", capacity=capacity, per_client=8, max_batch_size=1)


async def test_a_large_batch_does_not_inflate_the_retry_after_of_small_requests() -> None:
    queue = _queue()
    big, small = _job(1024, 100), _job(64, 16)
    # measured on a CPU: the 1024² × 100 request took 25 minutes at the same rate per
    # pixel-step as the small ones (about 0.1 s each)
    seconds_per_unit = 0.1 / work(small)
    queue.rate.record(work(big) * seconds_per_unit, work(big))
    queue.push(_job(64, 16, 1))
    queue.push(_job(64, 16, 2))
    with pytest.raises(Overloaded) as refused:
        queue.push(_job(64, 16, 3))
    assert 1.0 <= refused.value.retry_after < 2.0


async def test_retry_after_grows_with_the_cost_of_the_queued_work_and_is_bounded() -> None:
    small_queue, big_queue = _queue(), _queue()
    for queue, size in ((small_queue, 256), (big_queue, 1024)):
        queue.rate.record(10.0, work(_job(256, 20)))
        queue.push(_job(size, 20, 1))
    assert small_queue.retry_after() < big_queue.retry_after() <= MAX_RETRY_AFTER_S
    big_queue.rate.record(1e6, 1)  # an absurd rate is still bounded
    assert big_queue.retry_after() == MAX_RETRY_AFTER_S


async def test_queued_etas_add_the_running_batch_and_the_work_ahead() -> None:
    queue = _queue(capacity=4)
    queue.rate.record(1.0, work(_job(64, 16)))
    jobs = [_job(64, 16, 1), _job(128, 16, 2), _job(64, 16, 3)]
    for job in jobs:
        queue.push(job)
    etas = [job.snapshot.eta_s for job in jobs]
    assert etas[0] < etas[1] < etas[2]
    # the 128² request costs four 64² ones: the gap it makes is four times the first's
    assert etas[1] - etas[0] == pytest.approx(4 * etas[0], rel=0.01)
    queue.running(work(_job(512, 16)))  # a large batch starts: everyone waits longer
    assert all(job.snapshot.eta_s > eta for job, eta in zip(jobs, etas, strict=True))


async def test_requests_per_minute_are_counted_per_client(make_engine: EngineFactory) -> None:
    engine, _ = make_engine(client_requests_per_minute=3)
    for seed in range(3):
        await engine.generate(make_request(seed), client_id="a", wait_for_model=True)
    with pytest.raises(Overloaded) as refused:
        await engine.generate(make_request(9), client_id="a", wait_for_model=True)
    assert "client_requests_per_minute" in refused.value.message
    assert 1.0 <= refused.value.retry_after <= 20.0  # one request's share of the minute
    await engine.generate(make_request(10), client_id="b", wait_for_model=True)  # another client


async def test_the_rate_limit_remembers_a_bounded_number_of_clients() -> None:
    limit = ClientRateLimit(per_minute=1, max_clients=100)
    for n in range(1000):
        limit.take(f"client-{n}")
    limit.take("client-0")  # forgotten long ago: a fresh bucket
    with pytest.raises(Overloaded):
        limit.take("client-999")
