"""The ingress's RemoteEngine over a replica's ModelHost, without Ray: the stream a Serve handle
would carry is the host's async generator here, the replica's engine is imagine's own Engine
over the fake manager (tests/engine/fake_manager.py), and "a replica died" is an exception the
stream raises part-way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from imagine.engine.job import JobSnapshot
from imagine.errors import (
    Canceled,
    GenerationFailed,
    InvalidRequest,
    ModelLoading,
    Overloaded,
)
from imagine.ray_serve.events import Failed, error_from_wire, error_to_wire
from imagine.ray_serve.model_host import HostedModel, ModelHost
from imagine.ray_serve.remote_engine import RemoteEngine
from imagine.request import GenerationRequest, JobState
from imagine.settings import Settings
from tests.engine.fake_manager import FakeManager, make_request


class ReplicaDied(Exception):
    """Stands for Ray's ActorDiedError."""


class Registry:
    def __init__(self, manager: FakeManager) -> None:
        self._manager = manager

    def resolve(self, model_id: str) -> Any:
        info = self._manager.describe(model_id)
        return type("Resolved", (), {"spec": info.spec, "revision": info.revision})()


def _settings(**overrides: Any) -> Settings:
    return Settings(preload=[], batch_wait_ms=0.0, max_request_s=0, **overrides)


async def _host(manager: FakeManager, **settings: Any) -> tuple[ModelHost, HostedModel]:
    host = ModelHost(settings=_settings(**settings), replica="r1", manager=manager)
    return host, await host.load("m")


def _engine(
    manager: FakeManager,
    open_stream: Any,
    *,
    resubmits: int = 2,
    **settings: Any,
) -> RemoteEngine:
    return RemoteEngine(
        settings=_settings(**settings),
        open_stream=open_stream,
        is_replica_lost=lambda exc: isinstance(exc, ReplicaDied),
        resubmits=resubmits,
        registry=Registry(manager),
    )


def _via(host: ModelHost, model: HostedModel) -> Any:
    def open_stream(request: GenerationRequest, **kwargs: Any) -> AsyncIterator[Any]:
        return host.stream(model, request, **kwargs)

    return open_stream


async def _states(job: Any) -> list[JobSnapshot]:
    return [snap async for snap in job.events()]


async def test_a_remote_job_mirrors_the_replicas_progress_and_gets_its_image() -> None:
    manager = FakeManager()
    host, model = await _host(manager)
    engine = _engine(manager, _via(host, model))
    request = make_request(seed=7, steps=5)
    job = engine.submit(request, client_id="c", wait_for_model=True)
    seen = asyncio.create_task(_states(job))
    result = await engine.wait(job)
    assert result.request == request
    assert result.image.getpixel((0, 0)) == (7, 0, 0)  # the fake's image for seed 7
    snaps = await seen
    assert snaps[-1].state is JobState.SUCCEEDED
    steps = [s.step for s in snaps if s.state is JobState.RUNNING]
    assert steps and steps == sorted(steps) and max(steps) == 5
    assert job.replica == "r1"
    assert engine.describe("m").state == "ready"
    await model.close()


async def test_cancelling_the_remote_job_stops_the_replicas_call() -> None:
    manager = FakeManager(hold_batches=True)
    host, model = await _host(manager)
    engine = _engine(manager, _via(host, model))
    job = engine.submit(make_request(steps=1000), client_id="c", wait_for_model=True)
    call = await asyncio.wait_for(manager.started.get(), 10)
    async for snap in job.events():
        if snap.step >= 2:
            break
    assert job.cancel()
    with pytest.raises(Canceled):
        await engine.wait(job)
    # the replica's engine job was cancelled too: its pipeline call stops at the next step
    for _ in range(2000):
        if call.interrupted:
            break
        await asyncio.sleep(0.005)
    assert call.interrupted
    manager.release_batch()
    await model.close()


async def test_a_replica_that_dies_mid_job_leaves_it_to_another() -> None:
    manager = FakeManager()
    host, model = await _host(manager)
    attempts: list[int] = []

    async def dies_after_two_steps(request: GenerationRequest, **kwargs: Any) -> Any:
        attempts.append(1)
        async for event in host.stream(model, request, **kwargs):
            if len(attempts) == 1 and isinstance(event, JobSnapshot) and event.step >= 2:
                raise ReplicaDied("the actor died")
            yield event

    engine = _engine(manager, dies_after_two_steps)
    job = engine.submit(make_request(steps=6), client_id="c", wait_for_model=True)
    seen = asyncio.create_task(_states(job))
    result = await engine.wait(job)
    assert result.request.num_inference_steps == 6 and len(attempts) == 2
    states = [s.state for s in await seen]
    # running on the first replica, queued again, running on the second, done once
    first_run = states.index(JobState.RUNNING)
    assert JobState.QUEUED in states[first_run:]
    assert states.count(JobState.SUCCEEDED) == 1 and states[-1] is JobState.SUCCEEDED
    text = engine.metrics.render()[0].decode()
    assert 'imagine_ray_resubmitted_total{model="m"} 1.0' in text
    await model.close()


async def test_replicas_that_keep_dying_fail_the_job_after_the_resubmits() -> None:
    manager = FakeManager()
    opened: list[int] = []

    async def always_dies(request: GenerationRequest, **kwargs: Any) -> Any:
        opened.append(1)
        raise ReplicaDied("the actor died")
        yield  # an async generator

    engine = _engine(manager, always_dies, resubmits=2)
    job = engine.submit(make_request(), client_id="c", wait_for_model=True)
    with pytest.raises(GenerationFailed, match="died 3 times"):
        await engine.wait(job)
    assert len(opened) == 3


async def test_the_replicas_overloaded_reaches_the_caller_with_its_retry_after() -> None:
    manager = FakeManager(hold_batches=True)
    host, model = await _host(manager, queue_size=1, max_batch_size=1)
    engine = _engine(manager, _via(host, model))
    running = engine.submit(make_request(seed=1), client_id="a", wait_for_model=True)
    await asyncio.wait_for(manager.started.get(), 10)
    queued = engine.submit(make_request(seed=2, width=64), client_id="b", wait_for_model=True)
    async for snap in queued.events():
        if snap.position == 1:
            break
    refused = engine.submit(make_request(seed=3, width=48), client_id="c", wait_for_model=True)
    with pytest.raises(Overloaded) as caught:
        await engine.wait(refused)
    assert caught.value.retry_after > 0
    manager.release_batch()
    assert (await engine.wait(running)).request.seed == 1
    assert (await engine.wait(queued)).request.seed == 2
    await model.close()


async def test_a_remote_job_that_never_starts_times_out_as_overloaded() -> None:
    never: asyncio.Event = asyncio.Event()

    async def stuck(request: GenerationRequest, **kwargs: Any) -> Any:
        yield JobSnapshot(JobState.QUEUED, position=1)
        await never.wait()

    engine = _engine(FakeManager(), stuck, request_timeout_s=0.2)
    job = engine.submit(make_request(), client_id="c", wait_for_model=True)
    with pytest.raises(Overloaded):
        await engine.wait(job)
    assert job.state is JobState.CANCELED


@pytest.mark.parametrize(
    "error",
    [
        Overloaded("the queue is full", retry_after=2.5),
        InvalidRequest("width: 7 is not a multiple of 8", field="width"),
        ModelLoading("m", estimated_time=12.5),
    ],
)
def test_imagine_errors_cross_the_wire_with_their_attributes(error: Exception) -> None:
    back = error_from_wire(error_to_wire(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert vars(back) == vars(error)


def test_foreign_errors_cross_as_generation_failed_without_their_text() -> None:
    wire = error_to_wire(RuntimeError("CUDA out of memory at /secret/path"))
    back = error_from_wire(wire)
    assert isinstance(back, GenerationFailed) and "secret" not in back.message
    assert isinstance(error_from_wire(Failed("NoSuchError", "x", {})), GenerationFailed)
