"""(b) Throughput at concurrency 1, 4, 8, 16: dynamic batching on vs off.

Two `imagine serve` processes on the same model, one with max_batch_size=16 and one with 1 (no
batching), both up for the whole run; at each concurrency, `c` clients send requests back to back
(distinct seeds, cache bypassed) to one server, then to the other, so machine noise hits both
alike. Prints images/s for both and the ratio.

    .venv/bin/python -m bench.throughput [--model imagine/shapes --model-dir DIR] [--rounds 2]
"""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx

from bench._common import body, model_source, parser, server

CONCURRENCY = (1, 4, 8, 16)


async def measure(url: str, model_id: str, args, concurrency: int, total: int) -> float:
    seeds = itertools.count(10_000 * concurrency)
    left = total

    async with httpx.AsyncClient(timeout=600) as client:

        async def client_loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await client.post(
                    f"{url}/models/{model_id}",
                    json=body("a shape", next(seeds), args),
                    headers={"x-use-cache": "false", "x-wait-for-model": "true"},
                )
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=2, help="requests per client at each level")
    p.add_argument("--batch-wait-ms", type=float, default=None, help="the server's batch window")
    args = p.parse_args()
    results: dict[str, dict[int, float]] = {"batching on": {}, "batching off": {}}
    extra = {} if args.batch_wait_ms is None else {"batch_wait_ms": args.batch_wait_ms}
    common = {"queue_size": 64, "per_client_queue": 64, **extra}
    with (
        model_source(args) as (model_id, dirs),
        server(model_id, dirs, max_batch_size=16, **common) as on_url,
        server(model_id, dirs, max_batch_size=1, **common) as off_url,
    ):
        urls = {"batching on": on_url, "batching off": off_url}
        for url in urls.values():
            asyncio.run(measure(url, model_id, args, 2, 4))  # load + warm up
        for c in CONCURRENCY:
            for name, url in urls.items():
                results[name][c] = asyncio.run(
                    measure(url, model_id, args, c, max(4, c * args.rounds))
                )
    print(f"model {model_id}, {args.size}x{args.size}, {args.steps} steps; images/s")
    print(f"{'concurrency':>12} {'batching on':>12} {'batching off':>13} {'ratio':>7}")
    for c in CONCURRENCY:
        on, off = results["batching on"][c], results["batching off"][c]
        print(f"{c:>12} {on:>12.2f} {off:>13.2f} {on / off:>6.2f}x")


if __name__ == "__main__":
    main()
