"""Disconnects on a live server: uvicorn on loopback + the real Engine and ModelManager serving the
tiny SD 1.x pipeline. A client that closes its connection cancels its request, queued or running
(interrupted at the next denoising step); /health and /metrics show it, and the freed worker
serves the next request at once.

"At once" is shown by the steps counter, not by wall time: `imagine_denoising_steps_total` counts
steps as they run, and the worker runs one call at a time, so when the next request is answered
the counter holds the cancelled call's few steps plus the next request's own. "Wait until" is a
poll of /health or /metrics against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagine.cli import build_cache, build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve

pytestmark = pytest.mark.slow

MODEL = "tiny/sd"
LONG = 200  # steps: ~2 s at 32 px on one core, if nothing stopped it
SHORT = 2
WAIT = {"x-wait-for-model": "true"}
DEADLINE_S = 30.0

T = TypeVar("T")


@pytest.fixture(scope="module")
def base_url(tiny_model_root: Path) -> Iterator[str]:
    settings = Settings(
        model_dirs=[tiny_model_root],
        preload=[MODEL],
        default_model=MODEL,
        device="cpu",
        dtype="float32",
        allow_downloads=False,
        max_steps=LONG,
        batch_wait_ms=0.0,
        # One request at a time, so the second one stays queued behind the first (with more,
        # step-level batching lets it join the running one at the next step).
        max_batch_size=1,
    )
    app = create_app(settings, build_engine(settings), build_cache(settings))
    with serve(app) as url:
        yield url


async def post(base_url: str, seed: int, steps: int) -> httpx.Response:
    """One generation on its own connection; cancelling the task closes that connection."""
    body = {"inputs": "a red cube", "parameters": {"width": 32, "height": 32, "seed": seed}}
    body["parameters"]["num_inference_steps"] = steps
    async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE_S) as client:
        return await client.post(f"/models/{MODEL}", json=body, headers=WAIT)


async def hang_up(task: asyncio.Task[httpx.Response]) -> None:
    """Cancel a `post` task: httpx closes the connection mid-request, as a client going away."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def metrics(probe: httpx.AsyncClient) -> dict[tuple[str, frozenset], float]:
    """The `imagine_*` samples of /metrics, histogram buckets and timestamps left out."""
    r = await probe.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name.startswith("imagine_") and not s.name.endswith(("_bucket", "_created"))
    }


async def model_health(probe: httpx.AsyncClient) -> dict[str, Any]:
    r = await probe.get("/health")
    assert r.status_code == 200, r.text
    entry: dict[str, Any] = r.json()["engine"]["models"].get(MODEL, {})
    return entry


def value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset({"model": MODEL, **labels}.items())), 0.0)


def steps(samples: dict[tuple[str, frozenset], float]) -> float:
    return value(samples, "imagine_denoising_steps_total")


def cancelled(samples: dict[tuple[str, frozenset], float], where: str) -> float:
    return value(samples, "imagine_cancelled_requests_total", where=where)


def answered(samples: dict[tuple[str, frozenset], float], status: int) -> float:
    return value(samples, "imagine_requests_total", status=str(status))


async def until(
    read: Callable[[httpx.AsyncClient], Awaitable[T]],
    probe: httpx.AsyncClient,
    check: Callable[[T], bool],
) -> T:
    """Poll `read(probe)` until `check` holds; fail after DEADLINE_S with the last reading."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        reading = await read(probe)
        if check(reading):
            return reading
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {DEADLINE_S:g} s: {reading}")
        await asyncio.sleep(0.01)  # the poll interval, not a guess at when it will be true


async def test_disconnect_cancels_queued_then_running_work(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE_S) as probe:
        running = asyncio.create_task(post(base_url, 1, LONG))
        await until(metrics, probe, lambda m: steps(m) > 0)  # denoising
        queued = asyncio.create_task(post(base_url, 2, LONG))
        await until(model_health, probe, lambda h: h["queued"] == 1)

        # (a) the queued client hangs up: its request leaves the queue; the running one goes on
        await hang_up(queued)
        m = await until(metrics, probe, lambda m: answered(m, 499) == 1)
        assert cancelled(m, "queued") == 1 and cancelled(m, "running") == 0
        health = await model_health(probe)
        assert (health["queued"], health["running"]) == (0, 1)
        assert not running.done()

        # (b) the running client hangs up: its call is interrupted at the next step
        await hang_up(running)
        m = await until(metrics, probe, lambda m: answered(m, 499) == 2)
        assert cancelled(m, "running") == 1
        steps_when_cancelled = steps(m)  # the interrupt flag is set by now

        # The worker is free: the next request is served, and the counter shows the cancelled
        # call stopped within one step of the cancel, far from its 200.
        nxt = await post(base_url, 3, SHORT)
        assert nxt.status_code == 200, nxt.text
        m = await metrics(probe)
        cancelled_call = steps(m) - SHORT
        assert steps_when_cancelled <= cancelled_call <= steps_when_cancelled + 1
        assert cancelled_call < LONG / 2, cancelled_call
        assert value(m, "imagine_batch_size_count") == 1  # only the short request completed
        assert value(m, "imagine_batch_failures_total") == 0
        assert answered(m, 200) == 1
        health = await model_health(probe)
        assert (health["state"], health["queued"], health["running"]) == ("ready", 0, 0)
