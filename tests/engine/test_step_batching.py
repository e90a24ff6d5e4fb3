"""Step-level batching through the real Engine and ModelManager (settings.batching = "step").

A short request that arrives while a long one runs joins it at the next step and is answered
while the long one is still running; requests with different steps, schedulers and guidance
share denoiser calls; one canceled mid-way leaves, and every other image is the one the
pipeline draws for that request alone. Synchronised on the jobs' own progress events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagine.engine.engine import Engine
from imagine.engine.job import Job
from imagine.engine.step_worker import StepWorker
from imagine.errors import GenerationFailed
from imagine.models.manager import ModelManager
from imagine.request import GenerationRequest, JobState
from imagine.settings import Settings
from imagine.validation import build_request

SHAPES = "imagine/shapes"


@pytest.fixture
async def engine(tiny_model_root: Path) -> AsyncIterator[Engine]:
    settings = Settings(
        model_dirs=[tiny_model_root],
        preload=[],
        batching="step",
        max_request_s=0,
        batch_wait_ms=0,
    )
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    yield engine
    await engine.close()


def make(engine: Engine, model_id: str, seed: int, **params: Any) -> GenerationRequest:
    return build_request(
        model_id=model_id,
        prompt=f"a red circle {seed}",
        parameters={"seed": seed, "width": 64, "height": 64, **params},
        info=engine.describe(model_id),
        settings=engine._settings,
    )


async def reached(job: Job, step: int) -> None:
    """Returns once `job` has done `step` denoising steps (fails if it ends first)."""
    async for snapshot in job.events():
        if snapshot.step >= step:
            return
        assert not snapshot.state.terminal, f"job ended at step {snapshot.step}: {snapshot}"


def solo_pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    slot = engine._slots[request.model_id]
    assert slot.worker is not None
    manager: ModelManager = engine._manager  # type: ignore[assignment]
    (result,) = manager.run_batch(slot.worker.loaded, [request])
    return np.asarray(result.image, dtype=np.int16)


def close_to(result: Any, alone: np.ndarray) -> bool:
    return bool(np.abs(np.asarray(result.image, dtype=np.int16) - alone).max() <= 1)


async def test_a_short_request_joins_a_long_one_and_finishes_first(engine: Engine) -> None:
    await engine.load(SHAPES)
    assert isinstance(engine._slots[SHAPES].worker, StepWorker)
    long = engine.submit(
        make(engine, SHAPES, 1, num_inference_steps=60), client_id="a", wait_for_model=True
    )
    await reached(long, 2)
    short = engine.submit(
        make(
            engine,
            SHAPES,
            2,
            num_inference_steps=4,
            guidance_scale=1.0,
            scheduler="EulerAncestralDiscreteScheduler",
        ),
        client_id="b",
        wait_for_model=True,
    )
    short_result = await engine.wait(short)
    assert long.state is JobState.RUNNING, "the short one did not wait for the long one"
    assert long.snapshot.step < 60
    long_result = await engine.wait(long)
    assert close_to(short_result, solo_pixels(engine, short.request))
    assert close_to(long_result, solo_pixels(engine, long.request))


async def test_mixed_requests_share_steps_and_a_canceled_one_leaves(engine: Engine) -> None:
    model_id = "tiny/sd"
    await engine.load(model_id)
    requests = [
        make(engine, model_id, 1, num_inference_steps=8, guidance_scale=3.0),
        make(
            engine,
            model_id,
            2,
            num_inference_steps=12,
            guidance_scale=1.0,
            scheduler="DDIMScheduler",
        ),
        make(
            engine,
            model_id,
            3,
            num_inference_steps=10,
            guidance_scale=7.0,
            scheduler="DPMSolverMultistepScheduler",
            negative_prompt="blue",
        ),
        make(engine, model_id, 4, num_inference_steps=30),  # canceled
    ]
    jobs = [engine.submit(r, client_id=str(i), wait_for_model=True) for i, r in enumerate(requests)]
    await reached(jobs[3], 3)
    assert jobs[3].cancel()
    results = [await engine.wait(job) for job in jobs[:3]]
    assert jobs[3].state is JobState.CANCELED
    for job, result in zip(jobs, results, strict=False):
        assert close_to(result, solo_pixels(engine, job.request)), job.request
    # They ran together (all four were queued before the first step): the 8-step one finished
    # in a call of 3 rows, the 10-step one in a call of 2, the 12-step one alone.
    registry = engine.metrics.registry
    labels = {"model": model_id}
    assert registry.get_sample_value("imagine_batch_size_count", labels) == 3
    assert registry.get_sample_value("imagine_batch_size_sum", labels) == 3 + 2 + 1


async def test_a_request_that_cannot_run_fails_alone(engine: Engine) -> None:
    """A request the pipeline cannot run (a scheduler diffusers lacks, past validation) fails
    with a 500-class error; the request stepped beside it is untouched, and the worker goes on."""
    model_id = "tiny/sd"
    await engine.load(model_id)
    good = make(engine, model_id, 1, num_inference_steps=4)
    bad = dataclasses.replace(make(engine, model_id, 2), scheduler="NoSuchScheduler")
    jobs = [engine.submit(r, client_id="c", wait_for_model=True) for r in (good, bad)]
    with pytest.raises(GenerationFailed, match="NoSuchScheduler"):
        await engine.wait(jobs[1])
    assert close_to(await engine.wait(jobs[0]), solo_pixels(engine, good))
    again = engine.submit(make(engine, model_id, 3), client_id="c", wait_for_model=True)
    assert (await engine.wait(again)).image.size == (64, 64)


async def test_stepped_requests_teach_the_queue_its_rate(engine: Engine) -> None:
    """The cost model's factor learns from step-level work as from whole batches, so a rate
    measured on a busy machine (predictions 50x too long) comes back down."""
    await engine.load(SHAPES)
    rate = engine._slots[SHAPES].queue.rate
    assert not rate.measured  # max_request_s = 0: nothing calibrated at load
    await engine.generate(
        make(engine, SHAPES, 1, num_inference_steps=8), client_id="c", wait_for_model=True
    )
    assert rate.scale is not None
    wrong = rate.scale * 50
    rate.scale = wrong
    for seed in (2, 3, 4):
        await engine.generate(
            make(engine, SHAPES, seed, num_inference_steps=8), client_id="c", wait_for_model=True
        )
    assert rate.scale < wrong / 2
