"""Soak: `imagine serve` under steady load for a long time, watching for lost requests, errors
and memory creep (issue 9). `concurrency` clients send requests back to back; `--hits` of them
repeat one of a few fixed requests (cache hits after the first), the rest are fresh seeds.

Every `--every` seconds it prints the window's answers, status counts, p50/p99 and the server's
RSS; at the end the totals and the RSS growth after warm-up, with the bars the issue sets
(0 lost, 0 5xx, growth < 50 MB).

    .venv/bin/python -m bench.soak --model imagine/shapes --duration 1800 --concurrency 32
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import httpx

from bench._common import body, model_source, parser, server

REPEATED = 16  # distinct requests among the cache hits


def rss_mib(port: int) -> float:
    """RSS of the `imagine serve` listening on `port` (found by its command line)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and str(port).encode() in args:
            for line in (cmdline.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    raise RuntimeError(f"no imagine serve on port {port}")


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def soak(url: str, model_id: str, args) -> dict[str, object]:  # type: ignore[no-untyped-def]
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + args.duration
    statuses: Counter[str] = Counter()
    window: list[float] = []
    latencies: list[float] = []
    sent = 0
    rng = random.Random(0)
    seeds = iter(range(10**6, 10**9))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            seed = rng.randrange(REPEATED) if rng.random() < args.hits else next(seeds)
            sent += 1
            started = time.monotonic()
            try:
                r = await http.post(f"{url}/models/{model_id}", json=body("a shape", seed, args))
                statuses[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[f"lost ({type(exc).__name__})"] += 1
                continue
            elapsed = time.monotonic() - started
            window.append(elapsed)
            latencies.append(elapsed)

    rss: list[tuple[float, float]] = []
    started = time.monotonic()

    async def monitor() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(args.every)
            now = time.monotonic() - started
            rss.append((now, rss_mib(port)))
            print(
                f"{now:7.0f} s  sent {sent:7d}  answered {sum(statuses.values()):7d}  "
                f"window p50 {quantile(window, 0.5):6.0f} ms p99 {quantile(window, 0.99):6.0f} ms"
                f"  RSS {rss[-1][1]:7.1f} MiB  {dict(statuses)}",
                flush=True,
            )
            window.clear()

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(monitor(), *(client(http) for _ in range(args.concurrency)))
    after_warmup = [m for t, m in rss if t >= args.warmup] or [m for _, m in rss]
    lost = sum(n for k, n in statuses.items() if k.startswith("lost"))
    errors = sum(n for k, n in statuses.items() if k[0] == "5")
    growth = after_warmup[-1] - after_warmup[0]
    return {
        "sent": sent,
        "answered": sum(statuses.values()) - lost,
        "lost": lost,
        "5xx": errors,
        "statuses": dict(statuses),
        "p50_ms": round(quantile(latencies, 0.5)),
        "p99_ms": round(quantile(latencies, 0.99)),
        "rss_after_warmup_mib": round(after_warmup[0], 1),
        "rss_end_mib": round(after_warmup[-1], 1),
        "rss_growth_mib": round(growth, 1),
        "rss_max_mib": round(max(m for _, m in rss), 1),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hits", type=float, default=0.5, help="share of repeated requests")
    p.add_argument("--warmup", type=float, default=120.0, help="seconds before RSS counts")
    p.add_argument("--every", type=float, default=30.0, help="seconds between reports")
    args = p.parse_args()
    # The clients stand for `concurrency` users, but share one address: give that address the
    # queue share they would have had.
    share = {"per_client_queue": max(16, 2 * args.concurrency)}
    with model_source(args) as (model_id, dirs), server(model_id, dirs, **share) as url:
        result = asyncio.run(soak(url, model_id, args))
    print()
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    ok = result["lost"] == 0 and result["5xx"] == 0 and result["rss_growth_mib"] < 50
    print(f"{'bars (0 lost, 0 5xx, RSS growth < 50 MB)':>22}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
