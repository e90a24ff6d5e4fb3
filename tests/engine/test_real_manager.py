"""The engine over the real ModelManager and a tiny offline SD pipeline.

Batch invariance: a request's image is the same (max difference ≤ 1 level of 255) whether it
runs alone or batched with other requests, because the manager seeds one CPU generator per
request. Also: failures (generation and load) leave the engine serving.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagine.engine.engine import Engine
from imagine.errors import GenerationFailed, ModelLoadFailed
from imagine.models import loading
from imagine.models.manager import ModelManager
from imagine.request import GenerationRequest
from imagine.settings import Settings
from imagine.validation import build_request

pytestmark = pytest.mark.slow


def make(engine: Engine, settings: Settings, model_id: str, seed: int, **params: Any):
    info = engine.describe(model_id)
    values = {"width": 32, "height": 32, "num_inference_steps": 3, "seed": seed, **params}
    return build_request(
        model_id=model_id,
        prompt=f"a red circle {seed}",
        parameters=values,
        info=info,
        settings=settings,
    )


def pixels(result) -> np.ndarray:
    return np.asarray(result.image.convert("RGB"), dtype=np.int16)


async def run(engine: Engine, requests: list[GenerationRequest]):
    return await asyncio.gather(
        *(engine.generate(r, client_id=str(i), wait_for_model=True) for i, r in enumerate(requests))
    )


async def test_seeds_are_batch_invariant(tiny_model_root: Path, tiny_model_ids: dict) -> None:
    model_id = tiny_model_ids["sd"]
    # Whole-request batches and their window (step-level: tests/engine/test_step_batching.py)
    settings = Settings(
        model_dirs=[tiny_model_root],
        preload=[],
        max_batch_size=5,
        batch_wait_ms=2000,
        batching="request",
    )
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    try:
        await engine.load(model_id)
        requests = [make(engine, settings, model_id, seed) for seed in (11, 22, 33, 44, 55)]
        alone = [(await run(engine, [r]))[0] for r in requests]
        together = await run(engine, requests)  # five compatible: one call of five
        pairs = await run(engine, requests[:2])  # two: the window closes on the deadline
        registry = engine.metrics.registry
        labels = {"model": model_id}
        assert registry.get_sample_value("imagine_batch_size_count", labels) == 7
        assert registry.get_sample_value("imagine_batch_size_sum", labels) == 5 * 1 + 5 + 2
        for a, b in zip(alone, together, strict=True):
            assert a.request == b.request
            assert np.abs(pixels(a) - pixels(b)).max() <= 1
        for a, b in zip(alone[:2], pairs, strict=True):
            assert np.abs(pixels(a) - pixels(b)).max() <= 1
        assert np.abs(pixels(alone[0]) - pixels(alone[1])).max() > 1  # seeds do matter
        assert set(together[0].timings) >= {"queue", "denoising"}
    finally:
        await engine.close()


async def test_failures_do_not_poison_the_engine(
    tiny_model_root: Path, tiny_model_ids: dict, tmp_path: Path
) -> None:
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "Nope"]})
    )
    settings = Settings(
        model_dirs=[tiny_model_root, tmp_path / "models"], preload=[], batch_wait_ms=0
    )
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    model_id = tiny_model_ids["sd"]
    try:
        with pytest.raises(ModelLoadFailed, match="broken"):
            await engine.load("broken")
        await engine.load(model_id)
        good = make(engine, settings, model_id, 1)
        bad = good.__class__(**{**_fields(good), "scheduler": "NoSuchScheduler"})
        with pytest.raises(GenerationFailed):
            await engine.generate(bad, client_id="c", wait_for_model=True)
        assert (await engine.generate(good, client_id="c", wait_for_model=True)).image
    finally:
        await engine.close()


def _fields(request: GenerationRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


async def test_a_model_loads_and_generates_on_one_thread_of_its_own(
    tiny_model_root: Path, tiny_model_ids: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Why it matters: a second thread running torch ops starts a second OpenMP team, and with
    # more helper threads than cores libgomp stops spinning between ops (measured: the embedded
    # model 15-20 % slower when served than called directly).
    model_id = tiny_model_ids["sd"]
    loads: list[int] = []
    denoises: list[int] = []
    build = loading.build_pipeline

    def watched_build(*args: Any, **kwargs: Any) -> Any:
        loads.append(threading.get_ident())
        return build(*args, **kwargs)

    def watch_denoise(*_: Any) -> None:
        denoises.append(threading.get_ident())

    monkeypatch.setattr(loading, "build_pipeline", watched_build)
    settings = Settings(model_dirs=[tiny_model_root], preload=[], batch_wait_ms=0)
    manager = ModelManager(settings=settings)
    engine = Engine(settings=settings, manager=manager)
    try:
        await engine.load(model_id)
        loaded = await manager.load(model_id)  # already loaded: the same instance
        loaded.pipeline.unet.register_forward_pre_hook(watch_denoise)
        request = make(engine, settings, model_id, 1)
        await engine.generate(request, client_id="c", wait_for_model=True)
        manager.run_batch(loaded, [request])  # a direct caller (CLI, evaluator) hops there too
    finally:
        await engine.close()
    assert len(loads) == 1 and loads[0] != threading.get_ident()
    assert set(denoises) == {loads[0]}
    with pytest.raises(GenerationFailed, match="unloaded"):  # the thread went with the model
        manager.run_batch(loaded, [request])
