"""MemoryCache: LRU by bytes, TTL, replacement, oversized entries."""

from __future__ import annotations

from imagine.cache import CachedImage, MemoryCache, ResultCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def image(n: int, seed: int = 1) -> CachedImage:
    return CachedImage(body=b"x" * n, content_type="image/png", seed=seed, headers={"a": "b"})


async def test_put_get_roundtrip() -> None:
    cache = MemoryCache(max_bytes=10_000, ttl_s=60)
    assert isinstance(cache, ResultCache)
    assert await cache.get("k") is None
    await cache.put("k", image(100, seed=7))
    got = await cache.get("k")
    assert got is not None and got.seed == 7 and got.body == b"x" * 100


async def test_lru_eviction_by_bytes() -> None:
    one = image(400).size_bytes()
    cache = MemoryCache(max_bytes=one * 2, ttl_s=60)
    await cache.put("a", image(400))
    await cache.put("b", image(400))
    assert await cache.get("a") is not None  # a is now most recent
    await cache.put("c", image(400))  # evicts b
    assert await cache.get("b") is None
    assert await cache.get("a") is not None
    assert await cache.get("c") is not None
    assert cache.size_bytes <= one * 2


async def test_ttl_expiry() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_bytes=10_000, ttl_s=10, clock=clock)
    await cache.put("k", image(10))
    clock.now = 9.9
    assert await cache.get("k") is not None
    clock.now = 10.0
    assert await cache.get("k") is None
    assert len(cache) == 0 and cache.size_bytes == 0


async def test_replace_and_oversized() -> None:
    cache = MemoryCache(max_bytes=1000, ttl_s=60)
    await cache.put("k", image(100))
    await cache.put("k", image(200))
    assert len(cache) == 1 and cache.size_bytes == image(200).size_bytes()
    await cache.put("big", image(5000))
    assert await cache.get("big") is None
    await cache.close()
    assert len(cache) == 0
