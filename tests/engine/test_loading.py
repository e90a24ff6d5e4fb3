"""Engine model loading: lazy and preload, waiting or 503, failures that do not poison, LRU."""

from __future__ import annotations

import asyncio

import pytest

from imagine.errors import GenerationFailed, ModelLoadFailed, ModelLoading, Overloaded
from tests.engine.conftest import EngineFactory
from tests.engine.fake_manager import FakeManager, make_request


def submit(engine, request, client: str = "c", wait: bool = True) -> asyncio.Task:
    return asyncio.create_task(engine.generate(request, client_id=client, wait_for_model=wait))


async def test_not_waiting_gets_loading_with_estimate_and_starts_the_load(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_loads=True))
    with pytest.raises(ModelLoading) as info:
        await engine.generate(make_request(0), client_id="c", wait_for_model=False)
    assert info.value.estimated_time == 12.5
    assert info.value.message == "Model m is currently loading"
    waiters = [submit(engine, make_request(i), client=str(i)) for i in range(3)]
    await asyncio.sleep(0)  # admitted synchronously before their first await
    assert engine.health()["models"]["m"] == {
        "state": "loading",
        "queued": 3,
        "running": 0,
        "memory_bytes": 0,
        "cost": None,  # not measured before the model has loaded
    }
    fake.release_load()
    results = await asyncio.gather(*waiters)
    assert [r.request.seed for r in results] == [0, 1, 2]
    assert fake.loads == ["m"]  # concurrent requests shared one load
    assert [len(c.requests) for c in fake.calls] == [3]  # queued while loading: one batch
    assert engine.describe("m").state == "ready"


async def test_failed_load_is_a_500_and_the_next_request_retries(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(load_failures={"m": 1}))
    with pytest.raises(ModelLoadFailed, match="weights are corrupt"):
        await engine.generate(make_request(0), client_id="c", wait_for_model=True)
    assert engine.health()["models"]["m"]["state"] == "failed"
    result = await engine.generate(make_request(1), client_id="c", wait_for_model=True)
    assert result.request.seed == 1
    assert fake.loads == ["m", "m"]


async def test_failed_load_is_reported_once_to_non_waiting_clients(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(load_failures={"m": 1}))
    with pytest.raises(ModelLoadFailed):
        await engine.load("m")
    with pytest.raises(ModelLoadFailed, match="weights are corrupt"):
        await engine.generate(make_request(0), client_id="c", wait_for_model=False)
    with pytest.raises(ModelLoading):  # this one starts a fresh load
        await engine.generate(make_request(0), client_id="c", wait_for_model=False)
    await engine.load("m")
    assert (await engine.generate(make_request(2), client_id="c", wait_for_model=False)).request


async def test_preload_on_start_skips_unknown_ids(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(preload=["m", "missing"])
    await engine.start()
    await engine.load("m")
    assert fake.loads == ["m"]
    assert engine.health()["models"]["m"]["state"] == "ready"


async def test_idle_models_are_evicted_least_recently_used_first(
    make_engine: EngineFactory,
) -> None:
    fake = FakeManager(models=("a", "b", "c"), memory_bytes=100)
    engine, _ = make_engine(fake, memory_budget_bytes=250)
    for model in ("a", "b", "a"):
        await engine.generate(make_request(0, model_id=model), client_id="x", wait_for_model=True)
    assert fake.unloads == []
    await engine.load("c")  # returns once the load, evictions included, is complete
    assert fake.unloads == ["b"]  # a was used more recently than b
    await engine.load("b")
    assert fake.unloads == ["b", "a"]
    health = engine.health()
    assert health["memory_used_bytes"] == 200
    assert {m: h["state"] for m, h in health["models"].items()} == {
        "a": "unloaded",
        "b": "ready",
        "c": "ready",
    }
    assert fake.loads == ["a", "b", "c", "b"]
    await engine.generate(make_request(0, model_id="b"), client_id="x", wait_for_model=True)


async def test_request_timeout_while_queued_is_overloaded(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_loads=True), request_timeout_s=0.05)
    with pytest.raises(Overloaded, match="request_timeout_s") as info:
        await engine.generate(make_request(1), client_id="q", wait_for_model=True)
    assert info.value.retry_after >= 1
    assert engine.health()["models"]["m"]["queued"] == 0
    fake.release_load()


async def test_request_timeout_while_running_fails_and_interrupts(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), request_timeout_s=0.05)
    with pytest.raises(GenerationFailed, match="request_timeout_s"):
        await engine.generate(make_request(0), client_id="r", wait_for_model=True)
    assert fake.calls[0].requests[0].seed == 0
    fake.release_batch()


async def test_close_fails_queued_requests(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_loads=True))
    waiting = submit(engine, make_request(0))
    await asyncio.sleep(0)
    await engine.close()
    with pytest.raises(GenerationFailed, match="shutting down"):
        await waiting
