"""Result caches behind one small interface (see `base.ResultCache`)."""

from __future__ import annotations

from imagine.cache.base import CachedImage, ResultCache
from imagine.cache.memory import MemoryCache

__all__ = ["CachedImage", "MemoryCache", "ResultCache"]
