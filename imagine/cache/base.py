"""The result-cache interface: a small async get / put / close over encoded images.

Keys come from `GenerationRequest.cache_key()` (model id + revision, every generation parameter,
the seed and the output format), so the cache never sees wire types. Backends live next to this
module (`memory.py`, `redis.py`); `imagine.cache.create_cache(settings)` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class CachedImage:
    """One encoded image as the HTTP layer sends it back."""

    body: bytes
    content_type: str
    seed: int
    headers: dict[str, str] = field(default_factory=dict)

    def size_bytes(self) -> int:
        """Approximate memory held by this entry (body plus header strings)."""
        extra = sum(len(k) + len(v) for k, v in self.headers.items())
        return len(self.body) + len(self.content_type) + extra + 64


@runtime_checkable
class ResultCache(Protocol):
    """A store of encoded results. Backends never raise on a miss; a backend that cannot reach its
    store (Redis down) logs and behaves as a miss / no-op rather than failing the request."""

    async def get(self, key: str) -> CachedImage | None:
        """The cached image for `key`, or None when absent or expired."""

    async def put(self, key: str, value: CachedImage) -> None:
        """Store `value` under `key` (replacing any previous value), subject to TTL and size."""

    async def close(self) -> None:
        """Release connections; later calls may fail."""
