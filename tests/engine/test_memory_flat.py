"""Resident memory stays flat over a few hundred requests, failures and cancellations included.

Bound: after a warm-up of 64 requests, 320 more (a fifth of them failing inside the pipeline,
some cancelled while queued or running, plus failing model loads) may grow RSS by at most
RSS_BOUND_BYTES. Leaking one 32×32 result per request would be ~1 MB; leaking a batch's
activations or a failed load's weights grows far faster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
from pathlib import Path

import pytest

from imagine.engine.engine import Engine
from imagine.errors import GenerationFailed, ModelLoadFailed
from imagine.models.manager import ModelManager
from imagine.settings import Settings
from imagine.validation import build_request

pytestmark = pytest.mark.slow

RSS_BOUND_BYTES = 16 * 1024 * 1024


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


async def test_rss_stays_flat(tiny_model_root: Path, tiny_model_ids: dict, tmp_path: Path) -> None:
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "Nope"]})
    )
    settings = Settings(
        model_dirs=[tiny_model_root, tmp_path / "models"],
        preload=[],
        max_batch_size=4,
        batch_wait_ms=1,
        queue_size=64,
        per_client_queue=64,
    )
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    model_id = tiny_model_ids["sd"]
    info = engine.describe(model_id)

    def request(i: int):
        good = build_request(
            model_id=model_id,
            prompt=f"shape {i}",
            parameters={"width": 32, "height": 32, "num_inference_steps": 2, "seed": i},
            info=info,
            settings=settings,
        )
        return dataclasses.replace(good, scheduler="NoSuchScheduler") if i % 5 == 0 else good

    async def one(i: int) -> str:
        task = asyncio.create_task(engine.generate(request(i), client_id="c", wait_for_model=True))
        if i % 16 == 3:
            task.cancel()
        try:
            await task
        except GenerationFailed:
            return "failed"
        except asyncio.CancelledError:
            return "cancelled"
        return "ok"

    async def wave(start: int, n: int) -> list[str]:
        outcomes: list[str] = []
        for base in range(start, start + n, 8):
            outcomes += await asyncio.gather(*(one(i) for i in range(base, base + 8)))
            if base % 64 == 0:
                with pytest.raises(ModelLoadFailed):
                    await engine.load("broken")
        return outcomes

    try:
        await engine.load(model_id)
        await wave(0, 64)
        gc.collect()
        before = rss_bytes()
        outcomes = await wave(64, 320)
        gc.collect()
        grown = rss_bytes() - before
    finally:
        await engine.close()
    assert {o: outcomes.count(o) for o in set(outcomes)}.keys() == {"ok", "failed", "cancelled"}
    print(f"RSS grew {grown / 2**20:.1f} MiB over {len(outcomes)} requests")
    assert grown < RSS_BOUND_BYTES, f"RSS grew {grown / 2**20:.1f} MiB"
