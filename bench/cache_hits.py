"""(c) Cache hits: latency and requests/s of answers from the in-memory result cache, next to
the latency of the same request computed (cache bypassed).

    .venv/bin/python -m bench.cache_hits [--model imagine/shapes --model-dir DIR] [-n 300]
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench._common import body, median_ms, model_source, parser, server


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("-n", type=int, default=300, help="cache hits measured")
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    with model_source(args) as (model_id, dirs), server(model_id, dirs) as url:
        payload = body("a cached shape", 42, args)
        target = f"{url}/models/{model_id}"
        with httpx.Client(timeout=600) as client:
            wait = {"x-wait-for-model": "true"}
            client.post(target, json=payload, headers=wait).raise_for_status()  # fills the cache
            computed, hits = [], []
            for _ in range(5):
                started = time.perf_counter()
                r = client.post(target, json=payload, headers={**wait, "x-use-cache": "false"})
                computed.append(time.perf_counter() - started)
            for _ in range(args.n):
                started = time.perf_counter()
                r = client.post(target, json=payload)
                hits.append(time.perf_counter() - started)
                assert r.headers["x-cache"] == "hit", r.headers

        async def burst() -> float:
            async with httpx.AsyncClient(timeout=60) as aclient:
                left = args.n

                async def loop() -> None:
                    nonlocal left
                    while left > 0:
                        left -= 1
                        (await aclient.post(target, json=payload)).raise_for_status()

                started = time.perf_counter()
                await asyncio.gather(*(loop() for _ in range(args.concurrency)))
                return args.n / (time.perf_counter() - started)

        rps = asyncio.run(burst())
    hits.sort()
    print(f"model {model_id}, {args.size}x{args.size}, {args.steps} steps")
    print(f"computed (cache bypassed) median {median_ms(computed):8.1f} ms")
    print(
        f"cache hit                 median {median_ms(hits):8.2f} ms, "
        f"p95 {hits[int(0.95 * len(hits))] * 1000:.2f} ms (n={args.n}, sequential)"
    )
    print(f"cache hits at concurrency {args.concurrency}: {rps:.0f} requests/s")
    print(f"hit vs computed: {median_ms(computed) / median_ms(hits):.0f}x faster")


if __name__ == "__main__":
    main()
