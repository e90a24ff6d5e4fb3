"""Cancelling running work, on the real Engine + ModelManager and the tiny SD 1.x pipeline.

A running request cancelled alone stops its pipeline call at the next denoising step, and the
freed worker serves the next request with the pixels a fresh engine gives. A request cancelled
while it shares a batch leaves the call alone: the other request gets its own image.

The manager below is the real one; it only watches the step observers (once per denoising step)
to count steps and to announce, through an asyncio queue, that a call is denoising. No sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagine.engine.engine import Engine
from imagine.models.manager import ModelManager
from imagine.request import GenerationRequest, GenerationResult, StepInfo, StepObserver
from imagine.settings import Settings
from imagine.validation import build_request

pytestmark = pytest.mark.slow

LONG = 200  # steps of a request that is cancelled: ~2 s at 32 px if it ran to the end


@dataclass(eq=False)
class WatchedCall:
    """One run_batch call as the pipeline saw it."""

    seeds: list[int]
    steps: int = 0  # denoising steps run so far
    interrupted: bool = False  # every observer asked the call to stop


class StepWatchingManager(ModelManager):
    """The real ModelManager; each run_batch call is recorded in `calls` and put on `denoising`
    once its first denoising step is done."""

    def __init__(self, *, settings: Settings) -> None:
        super().__init__(settings=settings)
        self.calls: list[WatchedCall] = []
        self.denoising: asyncio.Queue[WatchedCall] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def run_batch(
        self,
        model: Any,
        requests: Sequence[GenerationRequest],
        *,
        observers: Sequence[StepObserver] | None = None,
    ) -> list[GenerationResult]:
        call = WatchedCall(seeds=[r.seed for r in requests])
        self.calls.append(call)
        stops: list[bool] = []

        def watch(observe: StepObserver) -> StepObserver:
            def watched(info: StepInfo) -> bool:
                stop = observe(info)
                stops.append(stop)
                if len(stops) == len(requests):  # every request heard this step: one step done
                    call.steps += 1
                    call.interrupted |= all(stops)
                    stops.clear()
                    if call.steps == 1:
                        self._loop.call_soon_threadsafe(self.denoising.put_nowait, call)
                return stop

            return watched

        watchers = [watch(observe) for observe in observers or ()]
        result = super().run_batch(model, requests, observers=watchers)
        return result


def settings_for(root: Path, **overrides: Any) -> Settings:
    # request_timeout_s: a request the engine never answers fails the test instead of hanging it
    values: dict[str, Any] = {
        "model_dirs": [root],
        "preload": [],
        "max_steps": LONG,
        "request_timeout_s": 30.0,
        "max_request_s": 0,  # no calibration calls: the tests count the pipeline calls
        # whole-request pipeline calls and their interruption (step-level cancellation:
        # tests/engine/test_step_batching.py)
        "batching": "request",
        **overrides,
    }
    return Settings(**values)


def make(engine: Engine, settings: Settings, model_id: str, seed: int, steps: int):
    return build_request(
        model_id=model_id,
        prompt=f"a red circle {seed}",
        parameters={"width": 32, "height": 32, "num_inference_steps": steps, "seed": seed},
        info=engine.describe(model_id),
        settings=settings,
    )


@asynccontextmanager
async def watched_engine(settings: Settings, model_id: str) -> AsyncIterator[Engine]:
    engine = Engine(settings=settings, manager=StepWatchingManager(settings=settings))
    try:
        await engine.load(model_id)
        yield engine
    finally:
        await engine.close()


def manager_of(engine: Engine) -> StepWatchingManager:
    manager = engine._manager
    assert isinstance(manager, StepWatchingManager)
    return manager


async def on_fresh_engine(settings: Settings, *runs: list[GenerationRequest]) -> list[np.ndarray]:
    """The pixels of each request of `runs` from a new Engine and ModelManager. A run's requests
    are submitted together and, with no batch window, form one batch: they are all admitted
    before the worker task runs again (asyncio runs ready tasks in order)."""
    settings = settings.model_copy(update={"batch_wait_ms": 0.0})
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    out: list[np.ndarray] = []
    try:
        for run in runs:
            results = await asyncio.gather(
                *(
                    engine.generate(r, client_id=str(i), wait_for_model=True)
                    for i, r in enumerate(run)
                )
            )
            out += [pixels(r) for r in results]
        sizes = engine.metrics.registry.get_sample_value(
            "imagine_batch_size_sum", {"model": runs[0][0].model_id}
        )
        calls = engine.metrics.registry.get_sample_value(
            "imagine_batch_size_count", {"model": runs[0][0].model_id}
        )
        assert (calls, sizes) == (len(runs), len(out))  # one pipeline call per run
    finally:
        await engine.close()
    return out


def pixels(result: GenerationResult) -> np.ndarray:
    return np.asarray(result.image.convert("RGB"), dtype=np.int16)


def cancelled(engine: Engine, model_id: str, where: str) -> float | None:
    labels = {"model": model_id, "where": where}
    return engine.metrics.registry.get_sample_value("imagine_cancelled_requests_total", labels)


def submit(engine: Engine, request: GenerationRequest, client: str) -> asyncio.Task:
    return asyncio.create_task(engine.generate(request, client_id=client, wait_for_model=True))


async def test_cancel_running_request_stops_the_pipeline_and_frees_the_worker(
    tiny_model_root: Path, tiny_model_ids: dict
) -> None:
    model_id = tiny_model_ids["sd"]
    settings = settings_for(tiny_model_root, batch_wait_ms=0)
    async with watched_engine(settings, model_id) as engine:
        manager = manager_of(engine)
        doomed = submit(engine, make(engine, settings, model_id, 1, LONG), "doomed")
        call = await manager.denoising.get()
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        steps_when_cancelled = call.steps  # the interrupt flag is set by now

        nxt = make(engine, settings, model_id, 7, 4)
        result = await engine.generate(nxt, client_id="next", wait_for_model=True)
        # The worker is serial: the doomed call has returned before the next one started.
        assert [c.seeds for c in manager.calls] == [[1], [7]]
        assert call.interrupted
        assert call.steps <= steps_when_cancelled + 1 < LONG  # stopped at the next step
        assert (manager.calls[1].steps, manager.calls[1].interrupted) == (4, False)
        assert cancelled(engine, model_id, "running") == 1
        health = engine.health()["models"][model_id]
        assert (health["state"], health["queued"], health["running"]) == ("ready", 0, 0)
    (fresh,) = await on_fresh_engine(settings, [nxt])
    assert np.array_equal(pixels(result), fresh)


async def test_cancel_one_of_a_batch_leaves_the_other_image_untouched(
    tiny_model_root: Path, tiny_model_ids: dict
) -> None:
    model_id = tiny_model_ids["sd"]
    steps = 30
    # The batch is full at two, so it starts at once; the long window only keeps it together.
    settings = settings_for(tiny_model_root, max_batch_size=2, batch_wait_ms=2000)
    async with watched_engine(settings, model_id) as engine:
        manager = manager_of(engine)
        pair = [make(engine, settings, model_id, seed, steps) for seed in (11, 22)]
        keep_request = pair[0]
        keep = submit(engine, keep_request, "keep")
        doomed = submit(engine, pair[1], "doomed")
        call = await manager.denoising.get()
        assert call.seeds == [11, 22]
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        steps_when_cancelled = call.steps
        kept = await keep
        assert steps_when_cancelled < steps  # cancelled mid-run...
        assert (call.steps, call.interrupted) == (steps, False)  # ...and the call ran on
        assert len(manager.calls) == 1
        assert cancelled(engine, model_id, "running") == 1
        denoised = engine.metrics.registry.get_sample_value(
            "imagine_denoising_steps_total", {"model": model_id}
        )
        assert denoised == 2 * steps
    assert kept.request == keep_request
    alone, uncancelled, _ = await on_fresh_engine(settings, [keep_request], pair)
    assert np.array_equal(pixels(kept), uncancelled)  # exactly as if nobody had cancelled
    assert np.abs(pixels(kept) - alone).max() <= 1  # the batch-invariance bound
