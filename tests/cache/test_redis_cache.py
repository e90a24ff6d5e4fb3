"""RedisCache against a real redis-server: round trip, TTL, prefix, sharing, outage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from imagine.cache import CachedImage, InstrumentedCache, ResultCache, create_cache
from imagine.cache.redis import RedisCache, decode_entry, encode_entry
from imagine.metrics import Metrics
from imagine.settings import Settings
from tests.redis_server import free_port, redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    c = RedisCache(url=redis_url, ttl_s=60, prefix="t:")
    yield c
    await c.close()


IMAGE = CachedImage(body=b"\x89PNG...", content_type="image/png", seed=42, headers={"x-a": "1"})


def test_entry_encoding_round_trips() -> None:
    assert decode_entry(encode_entry(IMAGE)) == IMAGE
    with pytest.raises(ValueError):
        decode_entry(b"\x00")


async def test_put_get_with_prefix_and_ttl(cache: RedisCache, redis_url: str) -> None:
    assert isinstance(cache, ResultCache)
    assert await cache.get("k1") is None
    await cache.put("k1", IMAGE)
    assert await cache.get("k1") == IMAGE
    raw = redis.Redis.from_url(redis_url)
    try:
        assert raw.exists("t:k1") == 1
        assert 0 < raw.pttl("t:k1") <= 60_000
        raw.set("t:bad", b"garbage")
    finally:
        raw.close()
    assert await cache.get("bad") is None  # malformed entries are misses


async def test_two_clients_share_entries(redis_url: str) -> None:
    one = RedisCache(url=redis_url, ttl_s=60, prefix="shared:")
    two = RedisCache(url=redis_url, ttl_s=60, prefix="shared:")
    try:
        await one.put("k", IMAGE)
        await one.flush()  # stores run in the background; this one's own reads wait for them
        assert await two.get("k") == IMAGE
    finally:
        await one.close()
        await two.close()


async def test_unreachable_redis_degrades_to_miss() -> None:
    down = RedisCache(url=f"redis://127.0.0.1:{free_port()}/0", ttl_s=60)
    try:
        await down.put("k", IMAGE)  # no exception
        assert await down.get("k") is None
    finally:
        await down.close()


async def test_create_cache_picks_backend_and_counts_lookups(redis_url: str) -> None:
    assert create_cache(Settings(cache_backend="none")) is None
    metrics = Metrics()
    cache = create_cache(
        Settings(cache_backend="redis", redis_url=redis_url, redis_key_prefix="cc:"),
        metrics=metrics,
    )
    assert isinstance(cache, InstrumentedCache) and isinstance(cache.inner, RedisCache)
    assert await cache.get("x") is None
    await cache.put("x", IMAGE)
    assert await cache.get("x") == IMAGE
    await cache.close()
    body, _ = metrics.render()
    assert b'imagine_cache_lookups_total{result="hit"} 1.0' in body
    assert b'imagine_cache_lookups_total{result="miss"} 1.0' in body
