"""Engine behaviour against a fake manager: batching, admission, cancellation, loading."""

from __future__ import annotations

import asyncio
import threading

import pytest

from imagine.errors import (
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
)
from tests.engine.conftest import EngineFactory
from tests.engine.fake_manager import FakeManager, make_request


def submit(engine, request, client: str = "c", wait: bool = True) -> asyncio.Task:
    return asyncio.create_task(engine.generate(request, client_id=client, wait_for_model=wait))


async def enqueued() -> None:
    """Let freshly created tasks run up to their first await: `generate` admits a request to the
    queue synchronously before it first awaits, and tasks start in creation order, so a single
    yield is enough (deterministic, not a timing guess)."""
    await asyncio.sleep(0)


async def test_compatible_requests_share_a_batch_and_differing_ones_do_not(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), max_batch_size=4)
    first = submit(engine, make_request(0))
    await fake.started.get()  # the worker is busy: everything below queues up
    same = [submit(engine, make_request(i, width=64), client=f"c{i}") for i in range(1, 6)]
    other = [submit(engine, make_request(i, steps=8), client=f"d{i}") for i in range(6, 8)]
    await enqueued()
    fake.release_batch()
    results = await asyncio.gather(first, *same, *other)
    sizes = [[r.seed for r in call.requests] for call in fake.calls]
    assert sizes == [[0], [1, 2, 3, 4], [5], [6, 7]]
    for i, result in enumerate(results):
        assert result.request.seed == i  # one output per input, in order
        assert result.image.getpixel((0, 0))[0] == i
        assert "queue" in result.timings
    assert fake.violations == []


async def test_oldest_request_goes_first_so_no_key_starves(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), max_batch_size=2)
    first = submit(engine, make_request(0))
    await fake.started.get()
    a1 = submit(engine, make_request(1, steps=8), client="a")
    await enqueued()
    b = [submit(engine, make_request(i), client=f"b{i}") for i in range(2, 8)]
    await enqueued()
    fake.release_batch()
    await asyncio.gather(first, a1, *b)
    order = [[r.seed for r in call.requests] for call in fake.calls]
    assert order[1] == [1]  # the lone different request was older: it went before the rest


async def test_a_lone_request_does_not_wait_out_the_batch_window(
    make_engine: EngineFactory,
) -> None:
    engine, _ = make_engine(batch_wait_ms=10_000)
    for seed in range(2):  # sequential requests from one client: never any company
        result = await engine.generate(make_request(seed), client_id="c", wait_for_model=True)
        assert result.timings["queue"] < 5.0


async def test_after_a_shared_batch_the_window_holds_the_next_request(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), batch_wait_ms=300, max_batch_size=4)
    first = submit(engine, make_request(0))
    await fake.started.get()
    pair = [submit(engine, make_request(i), client=f"c{i}") for i in (1, 2)]
    await enqueued()
    fake.release_batch()
    await asyncio.gather(first, *pair)
    result = await engine.generate(make_request(3), client_id="c", wait_for_model=True)
    assert [len(call.requests) for call in fake.calls] == [1, 2, 1]
    assert result.timings["queue"] >= 0.3  # the window: company was likely, so it waited


async def test_model_work_runs_off_the_event_loop_one_call_at_a_time(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(max_batch_size=2)
    await asyncio.gather(*(submit(engine, make_request(i), client=str(i)) for i in range(9)))
    assert all(call.thread != threading.get_ident() for call in fake.calls)
    assert len({call.thread for call in fake.calls}) == 1
    assert fake.violations == []


async def test_full_queue_answers_overloaded_with_retry_after(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), queue_size=2, per_client_queue=2)
    running = submit(engine, make_request(0), client="x")
    await fake.started.get()
    queued = [submit(engine, make_request(i), client=f"q{i}") for i in (1, 2)]
    await enqueued()
    with pytest.raises(Overloaded) as info:
        await engine.generate(make_request(3), client_id="late", wait_for_model=True)
    assert info.value.retry_after >= 1
    assert "full" in info.value.message
    fake.release_batch()
    await asyncio.gather(running, *queued)


async def test_per_client_cap_leaves_room_for_others(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), queue_size=10, per_client_queue=2)
    running = submit(engine, make_request(0), client="greedy")
    await fake.started.get()
    mine = [submit(engine, make_request(i), client="greedy") for i in (1, 2)]
    await enqueued()
    with pytest.raises(Overloaded, match="per-client"):
        await engine.generate(make_request(3), client_id="greedy", wait_for_model=True)
    theirs = submit(engine, make_request(4), client="polite")
    fake.release_batch()
    await asyncio.gather(running, *mine, theirs)


async def test_cancel_queued_request_never_reaches_the_pipeline(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True))
    running = submit(engine, make_request(0))
    await fake.started.get()
    doomed = submit(engine, make_request(1, steps=9), client="d")
    await enqueued()
    assert engine.health()["models"]["m"]["queued"] == 1
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert engine.health()["models"]["m"]["queued"] == 0
    fake.release_batch()
    await running
    assert [r.seed for c in fake.calls for r in c.requests] == [0]


async def test_cancel_running_alone_interrupts_the_pipeline(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True))
    doomed = submit(engine, make_request(0))
    call = await fake.started.get()
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    nxt = submit(engine, make_request(1))
    second = await fake.started.get()  # the worker was freed by the interrupt, not the gate
    assert call.interrupted
    fake.release_batch()
    assert (await nxt).request.seed == 1
    assert not second.interrupted


async def test_cancel_one_of_a_shared_batch_leaves_the_other_untouched(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), max_batch_size=4)
    blocker = submit(engine, make_request(0, steps=7))
    await fake.started.get()
    keep = submit(engine, make_request(1), client="keep")
    doomed = submit(engine, make_request(2), client="doomed")
    await enqueued()
    fake.hold_next_batches()
    fake.release_batch()
    await blocker
    shared = await fake.started.get()
    assert [r.seed for r in shared.requests] == [1, 2]
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    fake.release_batch()
    assert (await keep).request.seed == 1
    assert not shared.interrupted


async def test_a_failed_batch_is_run_alone_so_only_the_bad_request_fails(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True))
    first = submit(engine, make_request(0))
    await fake.started.get()
    batch = [submit(engine, make_request(i), client=str(i)) for i in (1, 2, 3)]
    await enqueued()
    fake.batch_error = RuntimeError("CUDA went away")
    fake.fail_seeds = {2}
    fake.release_batch()
    assert (await first).request.seed == 0
    outcomes = await asyncio.gather(*batch, return_exceptions=True)
    # the batch of three failed, then each ran alone: only seed 2 fails
    assert [[r.seed for r in c.requests] for c in fake.calls] == [[0], [1, 2, 3], [1], [2], [3]]
    assert [o.request.seed for o in (outcomes[0], outcomes[2])] == [1, 3]
    assert isinstance(outcomes[1], GenerationFailed)
    # running them again alone is not a second wait in the queue: one observation each
    queued = engine.metrics.registry.get_sample_value(
        "imagine_queue_seconds_count", {"model": outcomes[0].request.model_id}
    )
    assert queued == 4
    assert "RuntimeError: CUDA went away" in outcomes[1].message
    assert (await engine.generate(make_request(5), client_id="c", wait_for_model=True)).request


async def test_when_every_request_fails_alone_each_raises_its_own_error(
    make_engine: EngineFactory,
) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True))
    first = submit(engine, make_request(0))
    await fake.started.get()
    batch = [submit(engine, make_request(i), client=str(i)) for i in (1, 2)]
    await enqueued()
    fake.batch_error = RuntimeError("CUDA went away")
    fake.fail_seeds = {1, 2}
    fake.release_batch()
    await first
    outcomes = await asyncio.gather(*batch, return_exceptions=True)
    assert all(isinstance(o, GenerationFailed) for o in outcomes)
    assert outcomes[0] is not outcomes[1]  # each request raises its own exception
    assert (await engine.generate(make_request(5), client_id="c", wait_for_model=True)).request


async def test_one_output_per_input_is_checked(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(drop_output=True))
    with pytest.raises(GenerationFailed, match="0 outputs for 1 inputs"):
        await engine.generate(make_request(0), client_id="c", wait_for_model=True)


async def test_too_many_pixels_is_a_400_naming_the_limit(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(max_batch_pixels=64 * 64)
    with pytest.raises(InvalidRequest, match="4096 pixels") as info:
        await engine.generate(
            make_request(0, width=128, height=64), client_id="c", wait_for_model=True
        )
    assert info.value.field == "width"
    assert fake.loads == []


async def test_batches_are_cut_to_the_pixel_limit(make_engine: EngineFactory) -> None:
    engine, fake = make_engine(FakeManager(hold_batches=True), max_batch_pixels=64 * 64 * 2)
    first = submit(engine, make_request(0))
    await fake.started.get()
    rest = [
        submit(engine, make_request(i, width=64, height=64), client=str(i)) for i in range(1, 6)
    ]
    await enqueued()
    fake.release_batch()
    await asyncio.gather(first, *rest)
    assert [len(c.requests) for c in fake.calls] == [1, 2, 2, 1]


async def test_unknown_model_is_not_found(make_engine: EngineFactory) -> None:
    engine, _ = make_engine()
    with pytest.raises(ModelNotFound):
        await engine.generate(make_request(0, model_id="nope"), client_id="c", wait_for_model=True)


async def test_a_job_accepted_before_a_restart_is_not_refused_by_the_cost_limit(
    make_engine: EngineFactory,
) -> None:
    # After a restart the model is calibrated again, maybe on a busy machine: its predictions
    # can then pass max_request_s for requests that were accepted. Those jobs (force) still run.
    engine, fake = make_engine(max_request_s=1.0)
    await engine.load("m")
    engine._slots["m"].queue.rate.scale = 1e6  # every prediction far past the limit
    request = make_request(1)
    with pytest.raises(InvalidRequest, match="max_request_s"):
        engine.submit(request, client_id="c", wait_for_model=True)
    job = engine.submit(request, client_id="c", wait_for_model=True, force=True)
    assert (await engine.wait(job)).request == request
