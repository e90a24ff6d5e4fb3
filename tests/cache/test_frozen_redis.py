"""A frozen Redis (SIGSTOP: it accepts connections and never answers) costs each cache call at
most its short timeout, and nothing once the breaker is open; the cache comes back by itself
when Redis does. Real redis-server, no mocks (issue 9, defect 6: ~10 s per request before)."""

from __future__ import annotations

import signal
import time

from imagine.cache.base import CachedImage
from imagine.cache.redis import RedisCache
from tests.redis_server import redis_server_process

IMAGE = CachedImage(body=b"png", content_type="image/png", seed=1)


async def _timed(coro) -> tuple[object, float]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = await coro
    return value, time.perf_counter() - started


async def test_a_frozen_redis_costs_a_timeout_then_nothing_until_it_thaws() -> None:
    with redis_server_process() as (url, proc):
        cache = RedisCache(
            url=url, ttl_s=60, timeout_s=0.25, breaker_failures=3, breaker_open_s=1.0
        )
        try:
            await cache.put("k", IMAGE)
            assert (await cache.get("k")) == IMAGE and cache.health()["state"] == "ok"
            proc.send_signal(signal.SIGSTOP)
            costs = []
            for _ in range(3):  # the failures that open the breaker: each bounded
                value, seconds = await _timed(cache.get("k"))
                assert value is None
                costs.append(seconds)
            assert max(costs) < 0.3 + 0.1, costs  # the timeout, plus scheduling slack
            assert cache.health()["state"] == "degraded"
            value, seconds = await _timed(cache.get("k"))  # open: Redis is not even asked
            assert value is None and seconds < 0.05
            _, seconds = await _timed(cache.put("k2", IMAGE))
            assert seconds < 0.05  # stores never wait for Redis
            proc.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while (await cache.get("k")) != IMAGE:  # half-open after 1 s, then closed
                assert time.monotonic() < deadline, "the cache did not come back"
                time.sleep(0.05)
            assert cache.health()["state"] == "ok"
        finally:
            await cache.close()
