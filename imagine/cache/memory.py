"""In-process result cache: LRU bounded in bytes, with a time-to-live per entry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from imagine.cache.base import CachedImage


class MemoryCache:
    """LRU over `max_bytes` of entries; entries older than `ttl_s` are misses.

    An entry larger than `max_bytes` is not stored. All methods run on the event loop without
    awaiting, so no lock is needed. `clock` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0, got {max_bytes}")
        if ttl_s <= 0:
            raise ValueError(f"cache ttl_s must be > 0, got {ttl_s}")
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedImage]] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        """Bytes currently held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedImage | None:
        """The entry for `key` (and mark it recently used), or None when absent or expired."""
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if self._clock() >= expires:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: CachedImage) -> None:
        """Store `value`; evict least recently used entries until the byte budget holds."""
        size = value.size_bytes()
        if key in self._entries:
            self._remove(key)
        if size > self._max_bytes:
            return
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._bytes += size
        while self._bytes > self._max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    async def close(self) -> None:
        """Drop every entry."""
        self._entries.clear()
        self._bytes = 0

    def _remove(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= value.size_bytes()
