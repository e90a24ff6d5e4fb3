"""Result caches behind one small interface (see `base.ResultCache`).

`create_cache(settings, metrics=...)` picks the backend named by `settings.cache_backend`
("memory", "redis" or "none") and, given a `Metrics`, counts hits and misses on every lookup.
"""

from __future__ import annotations

from imagine.cache.base import CachedImage, ResultCache
from imagine.cache.memory import MemoryCache
from imagine.metrics import Metrics
from imagine.settings import Settings

__all__ = ["CachedImage", "InstrumentedCache", "MemoryCache", "ResultCache", "create_cache"]


class InstrumentedCache:
    """Wraps a ResultCache and counts hits and misses in `metrics`."""

    def __init__(self, inner: ResultCache, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def get(self, key: str) -> CachedImage | None:
        value = await self.inner.get(key)
        self._metrics.observe_cache(hit=value is not None)
        return value

    async def put(self, key: str, value: CachedImage) -> None:
        await self.inner.put(key, value)

    async def close(self) -> None:
        await self.inner.close()

    def health(self) -> dict[str, object] | None:
        inner = getattr(self.inner, "health", None)
        return inner() if inner is not None else None


def create_cache(settings: Settings, *, metrics: Metrics | None = None) -> ResultCache | None:
    """The configured cache, or None for `cache_backend = "none"`. Opens no connection yet."""
    cache: ResultCache
    if settings.cache_backend == "none":
        return None
    if settings.cache_backend == "redis":
        from imagine.cache.redis import RedisCache

        cache = RedisCache(
            url=settings.redis_url,
            ttl_s=settings.cache_ttl_s,
            prefix=settings.redis_key_prefix,
            timeout_s=settings.redis_timeout_s,
        )
    else:
        cache = MemoryCache(max_bytes=settings.cache_max_bytes, ttl_s=settings.cache_ttl_s)
    return InstrumentedCache(cache, metrics) if metrics is not None else cache
