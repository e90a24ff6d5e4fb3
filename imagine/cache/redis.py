"""Redis-backed result cache, shared by every replica pointing at the same server.

Each entry is one Redis string `<prefix><key>` holding a small JSON header (content type, seed,
headers) and the image bytes, set with a TTL (`PX`), so Redis expires entries on its own. A
Redis that cannot be reached degrades to a miss (get) or a no-op (put) and is logged: the cache
must never fail a request that the engine could serve.
"""

from __future__ import annotations

import json
import logging
import struct

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from imagine.cache.base import CachedImage

log = logging.getLogger(__name__)

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
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"cache ttl_s must be > 0, got {ttl_s}")
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._prefix = prefix
        self._client = client if client is not None else aioredis.Redis.from_url(url)

    async def get(self, key: str) -> CachedImage | None:
        """The entry, or None when absent, expired, malformed or Redis is unreachable."""
        try:
            blob = await self._client.get(self._prefix + key)
        except (RedisError, OSError) as exc:
            log.warning("redis cache get failed (treated as a miss): %s", exc)
            return None
        if blob is None:
            return None
        try:
            return decode_entry(blob)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping malformed redis cache entry %s: %s", key, exc)
            return None

    async def put(self, key: str, value: CachedImage) -> None:
        """Store with the TTL; failures are logged and ignored."""
        try:
            await self._client.set(self._prefix + key, encode_entry(value), px=self._ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("redis cache put failed (ignored): %s", exc)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
