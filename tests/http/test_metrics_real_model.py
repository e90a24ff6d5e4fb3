"""/metrics and /health scraped after real requests: the real Engine + ModelManager serving the
tiny SD 1.x pipeline through the ASGI app. Every series the operator needs is present and moves.

The manager's `load` waits on an event the test sets, so "loading" (and a request queued behind
the load) is observed without timing: the queued request is pushed before the load starts.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagine.cache import create_cache
from imagine.engine.engine import Engine
from imagine.http.app import create_app
from imagine.models.manager import ModelManager
from imagine.settings import Settings

pytestmark = pytest.mark.slow

MODEL = "tiny/sd"
BROKEN = "org/broken"
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2}
WAIT = {"x-wait-for-model": "true"}
STAGES = ("text_encoding", "denoising", "decoding")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class GatedManager(ModelManager):
    """The real ModelManager whose loads start only once `gate` is set; `entered` is set when
    the engine asks for a load."""

    def __init__(self, *, settings: Settings) -> None:
        super().__init__(settings=settings)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def load(self, model_id: str) -> Any:
        self.entered.set()
        await self.gate.wait()
        return await super().load(model_id)


@dataclass
class Server:
    client: httpx.AsyncClient
    manager: GatedManager

    async def scrape(self) -> Samples:
        r = await self.client.get("/metrics")
        assert r.status_code == 200, r.text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }

    async def states(self) -> dict[str, str]:
        r = await self.client.get("/health")
        assert r.status_code == 200, r.text
        return {m: e["state"] for m, e in r.json()["engine"]["models"].items()}

    async def post(self, model: str, seed: int, **kwargs: Any) -> httpx.Response:
        body = {"inputs": "a red cube", "parameters": {**SMALL, "seed": seed}}
        return await self.client.post(f"/models/{model}", json=body, **kwargs)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series has not been created yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def server(tiny_model_root: Path, tmp_path: Path) -> AsyncIterator[Server]:
    broken = tmp_path / BROKEN  # a real SD folder whose unet weights are garbage
    shutil.copytree(tiny_model_root / MODEL, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    settings = Settings(
        model_dirs=[tiny_model_root, tmp_path],
        preload=[],
        default_model=MODEL,
        device="cpu",
        dtype="float32",
        allow_downloads=False,
        batch_wait_ms=0.0,
    )
    manager = GatedManager(settings=settings)
    engine = Engine(settings=settings, manager=manager)
    app = create_app(settings, engine, create_cache(settings, metrics=engine.metrics))
    transport = httpx.ASGITransport(app=app)
    await engine.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Server(client, manager)
    finally:
        manager.gate.set()
        await engine.close()


async def test_series_are_present_and_move(server: Server) -> None:
    before = await server.scrape()
    assert value(before, "imagine_models_loaded") == 0
    assert value(before, "process_resident_memory_bytes") > 0

    # A waiting request is queued, then the load starts and is held: "loading", depth 1.
    waiting = asyncio.ensure_future(server.post(MODEL, 1, headers=WAIT))
    await server.manager.entered.wait()
    loading = await server.scrape()
    assert value(loading, "imagine_queue_depth", model=MODEL) == 1
    assert (await server.states())[MODEL] == "loading"
    assert (await server.post(MODEL, 1)).status_code == 503  # not waiting

    server.manager.gate.set()
    first = await waiting
    assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
    hit = await server.post(MODEL, 1)
    assert hit.headers["x-cache"] == "hit" and hit.content == first.content
    bad = await server.client.post(
        f"/models/{MODEL}", json={"inputs": "x", "parameters": {"scheduler": "Nope"}}
    )
    assert bad.status_code == 400
    assert (await server.post("tiny/absent", 1)).status_code == 404
    failed = await server.post(BROKEN, 1, headers=WAIT)
    assert failed.status_code == 500 and BROKEN in failed.json()["error"]

    after = await server.scrape()
    requests = {
        (dict(labels)["model"], dict(labels)["status"]): v
        for (name, labels), v in after.items()
        if name == "imagine_requests_total"
    }
    assert requests == {
        (MODEL, "200"): 2.0,  # one generated, one from the cache
        (MODEL, "503"): 1.0,
        (MODEL, "400"): 1.0,
        ("unknown", "404"): 1.0,
        (BROKEN, "500"): 1.0,
    }
    assert value(after, "imagine_queue_depth", model=MODEL) == 0
    assert value(after, "imagine_batch_size_count", model=MODEL) == 1
    assert value(after, "imagine_batch_size_sum", model=MODEL) == 1
    assert value(after, "imagine_queue_seconds_count", model=MODEL) == 1
    assert value(after, "imagine_queue_seconds_sum", model=MODEL) > 0  # it waited for the load
    for stage in STAGES:
        assert value(after, "imagine_stage_seconds_count", model=MODEL, stage=stage) == 1, stage
        assert value(after, "imagine_stage_seconds_sum", model=MODEL, stage=stage) > 0, stage
    assert (
        value(after, "imagine_denoising_steps_total", model=MODEL) == SMALL["num_inference_steps"]
    )
    assert value(after, "imagine_steps_per_second", model=MODEL) > 0
    # lookups: the queued request, the 503, the hit, and the broken model's miss (the 400 and
    # the 404 never reach the cache)
    assert value(after, "imagine_cache_lookups_total", result="miss") == 3
    assert value(after, "imagine_cache_lookups_total", result="hit") == 1
    assert value(after, "imagine_models_loaded") == 1
    assert value(after, "imagine_model_memory_bytes", model=MODEL) > 0
    assert value(after, "imagine_model_loads_total", model=MODEL, outcome="ok") == 1
    assert value(after, "imagine_model_loads_total", model=BROKEN, outcome="failed") == 1
    assert value(after, "process_resident_memory_bytes") > 0

    states = await server.states()
    assert states == {MODEL: "ready", BROKEN: "failed"}
    health = (await server.client.get("/health")).json()["engine"]
    assert BROKEN in health["models"][BROKEN]["error"]
    assert health["memory_used_bytes"] == value(after, "imagine_model_memory_bytes", model=MODEL)
