"""Redis-backed result cache, shared by every replica pointing at the same server.

Each entry is one Redis string `<prefix><key>` holding a small JSON header (content type, seed,
headers) and the image bytes, set with a TTL (`PX`), so Redis expires entries on its own. A
Redis that cannot be reached degrades to a miss (get) or a no-op (put) and is logged: the cache
must never fail a request that the engine could serve, nor hold it up:
- every call has a short timeout (`timeout_s`, 250 ms): a frozen Redis accepts connections and
  never answers, which cost ~5 s per lookup and per store before;
- a circuit breaker: after `breaker_failures` failures in a row the cache is skipped for
  `breaker_open_s`, then one call tries again (closing it on success);
- stores run in the background (bounded), off the response path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from imagine.cache.base import CachedImage

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_PENDING_PUTS = 256

_HEADER_LEN = struct.Struct(">I")


def encode_entry(value: CachedImage) -> bytes:
    """Serialise: 4-byte big-endian header length, JSON header, then the body."""
    header = json.dumps(
        {"content_type": value.content_type, "seed": value.seed, "headers": value.headers},
        separators=(",", ":"),
    ).encode()
    return _HEADER_LEN.pack(len(header)) + header + value.body


def decode_entry(blob: bytes) -> CachedImage:
    """Inverse of `encode_entry`. Raises ValueError on a malformed blob."""
    if len(blob) < _HEADER_LEN.size:
        raise ValueError("cache entry too short")
    (n,) = _HEADER_LEN.unpack_from(blob)
    header = json.loads(blob[_HEADER_LEN.size : _HEADER_LEN.size + n])
    return CachedImage(
        body=blob[_HEADER_LEN.size + n :],
        content_type=str(header["content_type"]),
        seed=int(header["seed"]),
        headers={str(k): str(v) for k, v in header.get("headers", {}).items()},
    )


class RedisCache:
    """ResultCache over redis.asyncio. `client` may be injected (tests); otherwise one is made
    from `url` lazily (no connection is opened until the first call)."""

    def __init__(
        self,
        *,
        url: str,
        ttl_s: float,
        prefix: str = "imagine:result:",
        client: aioredis.Redis | None = None,
        timeout_s: float = 0.25,
        breaker_failures: int = 3,
        breaker_open_s: float = 5.0,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"cache ttl_s must be > 0, got {ttl_s}")
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._client = (
            client
            if client is not None
            else aioredis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        )
        self._breaker_failures = breaker_failures
        self._breaker_open_s = breaker_open_s
        self._failures = 0
        self._open_until = 0.0
        self._pending: dict[str, asyncio.Task[Any]] = {}  # background stores, by key

    def health(self) -> dict[str, Any]:
        """`{"backend": "redis", "state": "ok" | "degraded"}`: degraded while the breaker is open
        or after a failure, until a call succeeds."""
        state = "ok" if self._failures == 0 else "degraded"
        return {"backend": "redis", "state": state, "consecutive_failures": self._failures}

    async def _call(self, what: str, op: Callable[[], Awaitable[T]]) -> T | None:
        """`op()` within the timeout, or None (logged) when it fails or the breaker is open."""
        if time.monotonic() < self._open_until:
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await op()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failures += 1
            if self._failures >= self._breaker_failures:
                self._open_until = time.monotonic() + self._breaker_open_s
                log.warning(
                    "redis cache %s failed %d times in a row (%s); skipping Redis for %.1f s",
                    what,
                    self._failures,
                    type(exc).__name__,
                    self._breaker_open_s,
                )
            else:
                log.warning("redis cache %s failed (%s: %s)", what, type(exc).__name__, exc)
            return None
        self._failures = 0
        return result

    async def get(self, key: str) -> CachedImage | None:
        """The entry, or None when absent, expired, malformed or Redis is unreachable. A store
        of the same key still in flight here is awaited first (read your own writes)."""
        pending = self._pending.get(key)
        if pending is not None:
            await asyncio.gather(pending, return_exceptions=True)
        blob = await self._call("get", lambda: self._client.get(self._prefix + key))
        if blob is None:
            return None
        try:
            return decode_entry(blob)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping malformed redis cache entry %s: %s", key, exc)
            return None

    async def put(self, key: str, value: CachedImage) -> None:
        """Store with the TTL, in the background (at most 256 stores pending; more are
        dropped); failures are logged and ignored."""
        if len(self._pending) >= _MAX_PENDING_PUTS or time.monotonic() < self._open_until:
            return
        blob = encode_entry(value)
        task = asyncio.create_task(
            self._call("put", lambda: self._client.set(self._prefix + key, blob, px=self._ttl_ms))
        )
        self._pending[key] = task
        task.add_done_callback(
            lambda t: self._pending.pop(key, None) if self._pending.get(key) is t else None
        )

    async def flush(self) -> None:
        """Wait for the pending stores (tests; shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def close(self) -> None:
        """Let pending stores finish (each is bounded by the timeout), then close the pool."""
        await self.flush()
        await self._client.aclose()
