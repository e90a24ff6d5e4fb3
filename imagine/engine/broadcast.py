"""Fan-out of one stream of values to any number of async subscribers.

Each subscriber has its own bounded queue, so a slow one never holds the publisher back and
still sees every value in order (up to `maxsize` behind; past that its oldest values are
dropped). A late subscriber starts with the latest value, so it learns the current state first.
Everything runs on the event loop: publish from another thread with `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Broadcast"]


class _Subscriber(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self.items: deque[T] = deque(maxlen=maxsize)
        self.ready = asyncio.Event()


class Broadcast(Generic[T]):
    """Publish values; `subscribe()` yields the latest one, then every later one, until close."""

    def __init__(self, initial: T, *, maxsize: int = 1024) -> None:
        self.latest = initial
        self.closed = False
        self._maxsize = maxsize
        self._subscribers: set[_Subscriber[T]] = set()

    def __len__(self) -> int:
        """How many subscribers are listening now."""
        return len(self._subscribers)

    def publish(self, value: T) -> None:
        if self.closed:
            return
        self.latest = value
        for sub in self._subscribers:
            sub.items.append(value)
            sub.ready.set()

    def close(self, final: T | None = None) -> None:
        """Publish `final` (when given) and end every subscription after it."""
        if final is not None:
            self.publish(final)
        self.closed = True
        for sub in self._subscribers:
            sub.ready.set()

    async def subscribe(self) -> AsyncIterator[T]:
        sub: _Subscriber[T] = _Subscriber(self._maxsize)
        first, ended = self.latest, self.closed
        if not ended:  # listen before the first yield: nothing published meanwhile is missed
            self._subscribers.add(sub)
        try:
            yield first
            if ended:
                return
            while True:
                while sub.items:
                    yield sub.items.popleft()
                if self.closed:
                    return
                sub.ready.clear()
                await sub.ready.wait()
        finally:
            self._subscribers.discard(sub)
