"""Step-level vs request-level batching, side by side in one run (settings.batching).

Two `imagine serve` processes on the same model (default: the embedded imagine/shapes), one with
batching=step and one with batching=request, both up for the whole run; every measurement runs
on one, then on the other, so machine noise hits both alike. Requests bypass the cache.

1. Poisson arrivals at ~70 % utilisation: the arrival rate is 0.7 / (the mean latency of the mix
   alone, measured first); the same seeded arrival schedule goes to both. Mean and p95 latency.
   Two mixes: identical requests (16 steps) and mixed ones (8-24 steps, three schedulers,
   guidance 1-7).
2. A short request (4 steps) sent half-way through a long batch (1, then 4 requests of 100
   steps): its latency ÷ its latency alone (medians of --repeats runs).
3. Throughput at concurrency 8 with mixed steps, schedulers and guidance, ÷ the same requests
   one after another.
4. Measure 2 (one long request) without HTTP: the engine in this process, one mode then the
   other, the short request sent once the long one has done 50 of its 100 steps.

    .venv/bin/python -m bench.step_batching [--model imagine/shapes] [--arrivals 40]
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

import httpx

from bench._common import model_source, parser, server

SCHEDULERS = ("DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler", "DDIMScheduler")


def params(seed: int, steps: int, scheduler: str | None = None, guidance: float | None = None):
    out: dict[str, Any] = {"num_inference_steps": steps, "seed": seed}
    if scheduler:
        out["scheduler"] = scheduler
    if guidance is not None:
        out["guidance_scale"] = guidance
    return out


def mixed(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return params(
        seed, rng.choice((8, 16, 24)), rng.choice(SCHEDULERS), rng.choice((1.0, 3.0, 7.0))
    )


def same(seed: int) -> dict[str, Any]:
    return params(seed, 16)


class Client:
    def __init__(self, url: str, model_id: str, size: int) -> None:
        self.url, self.model_id, self.size = url, model_id, size
        self.http = httpx.AsyncClient(timeout=600)

    async def one(self, parameters: dict[str, Any]) -> float:
        """Seconds until the image is back."""
        started = time.perf_counter()
        response = await self.http.post(
            f"{self.url}/models/{self.model_id}",
            json={
                "inputs": "a red circle",
                "parameters": {"width": self.size, "height": self.size, **parameters},
            },
            headers={"x-use-cache": "false", "x-wait-for-model": "true"},
        )
        response.raise_for_status()
        return time.perf_counter() - started


async def poisson(client: Client, make, rate: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client.one(make(seed + i))))
        await asyncio.sleep(rng.expovariate(rate))
    return await asyncio.gather(*tasks)


async def short_during_long(client: Client, long_s: float, batch: int) -> tuple[float, float]:
    """(latency of a 4-step request sent half-way through a batch x 100-step batch, alone)."""
    alone = statistics.median([await client.one(params(900 + i, 4)) for i in range(3)])
    longs = [asyncio.create_task(client.one(params(1000 + i, 100))) for i in range(batch)]
    await asyncio.sleep(long_s / 2)
    short = await client.one(params(2000, 4))
    await asyncio.gather(*longs)
    return short, alone


async def throughput(client: Client, concurrency: int, n: int) -> float:
    queue = list(range(3000, 3000 + n))

    async def loop() -> None:
        while queue:
            await client.one(mixed(queue.pop()))

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def run(urls: dict[str, str], model_id: str, args: Any) -> None:
    clients = {mode: Client(url, model_id, args.size) for mode, url in urls.items()}
    for client in clients.values():  # warm up
        await client.one(params(1, 4))
    base = clients["request"]
    print(f"model {model_id}, {args.size}x{args.size}; {args.arrivals} arrivals per run")
    print("\n1. Poisson arrivals at ~70 % utilisation (latency, s)")
    for name, make in (("identical 16-step", same), ("mixed", mixed)):
        service = statistics.mean([await base.one(make(500 + i)) for i in range(6)])
        rate = 0.7 / service
        print(f"  {name}: alone {service:.3f} s -> {rate:.2f} req/s")
        for mode, client in clients.items():
            lat = await poisson(client, make, rate, args.arrivals, seed=7)
            print(f"    {mode:8s} mean {statistics.mean(lat):.3f}  p95 {p95(lat):.3f}")
    for batch in (1, 4):
        print(f"\n2. A 4-step request sent half-way through a {batch} x 100-step batch")
        started = time.perf_counter()
        await asyncio.gather(*(base.one(params(4000 + i, 100)) for i in range(batch)))
        long_s = time.perf_counter() - started
        for mode, client in clients.items():
            runs = [await short_during_long(client, long_s, batch) for _ in range(args.repeats)]
            short, alone = (statistics.median(values) for values in zip(*runs, strict=True))
            print(
                f"    {mode:8s} {short:.3f} s vs {alone:.3f} s alone: {short / alone:.1f}x "
                f"(median of {args.repeats})"
            )
    print("\n3. Mixed requests: throughput at concurrency 8 vs one after another (images/s)")
    for mode, client in clients.items():
        one = await throughput(client, 1, args.throughput_n)
        eight = await throughput(client, 8, args.throughput_n)
        print(f"    {mode:8s} c=1 {one:.2f}  c=8 {eight:.2f}  ratio {eight / one:.2f}x")


async def in_process(model_id: str, mode: str, repeats: int) -> tuple[float, float]:
    """(median latency of a 4-step request joined at step 50 of a 100-step one, alone)."""
    from imagine.engine.engine import Engine
    from imagine.models.manager import ModelManager
    from imagine.settings import Settings
    from imagine.validation import build_request

    settings = Settings(preload=[], batching=mode, max_request_s=0, batch_wait_ms=0)
    engine = Engine(settings=settings, manager=ModelManager(settings=settings))
    await engine.load(model_id)
    info = engine.describe(model_id)

    def request(seed: int, steps: int) -> Any:
        parameters = params(seed, steps)
        return build_request(
            model_id=model_id,
            prompt="a red circle",
            parameters=parameters,
            info=info,
            settings=settings,
        )

    async def timed(seed: int, steps: int) -> float:
        started = time.perf_counter()
        await engine.generate(request(seed, steps), client_id="short", wait_for_model=True)
        return time.perf_counter() - started

    try:
        alone = [await timed(100 + i, 4) for i in range(repeats)]
        joined = []
        for i in range(repeats):
            long = engine.submit(request(1 + i, 100), client_id="long", wait_for_model=True)
            async for snapshot in long.events():
                if snapshot.step >= 50:
                    break
            joined.append(await timed(200 + i, 4))
            await engine.wait(long)
    finally:
        await engine.close()
    return statistics.median(joined), statistics.median(alone)


def main() -> None:
    p = parser(__doc__ or "")
    p.set_defaults(model="imagine/shapes")
    p.add_argument("--arrivals", type=int, default=40)
    p.add_argument("--throughput-n", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3, help="runs of measure 2 (median)")
    args = p.parse_args()
    common = {"queue_size": 256, "per_client_queue": 256, "max_request_s": 0}
    with (
        model_source(args) as (model_id, dirs),
        server(model_id, dirs, batching="step", **common) as step_url,
        server(model_id, dirs, batching="request", **common) as request_url,
    ):
        asyncio.run(run({"step": step_url, "request": request_url}, model_id, args))
    print("\n4. Measure 2 with one long request, in this process (the engine, no HTTP)")
    for mode in ("step", "request"):
        short, alone = asyncio.run(in_process(model_id, mode, args.repeats))
        print(f"    {mode:8s} {short:.3f} s vs {alone:.3f} s alone: {short / alone:.1f}x")


if __name__ == "__main__":
    main()
