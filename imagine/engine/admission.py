"""Admission control and the per-model queue.

One `RequestQueue` per model, owned by the engine and drained by that model's worker. Order is
first come, first served; a request is refused at once (Overloaded, never an unbounded wait)
when the model's queue holds `capacity` requests or its client already holds `per_client`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

from imagine.errors import Overloaded
from imagine.request import GenerationRequest, GenerationResult


@dataclass(eq=False, slots=True)
class Pending:
    """One admitted request and the future its caller awaits."""

    request: GenerationRequest
    client_id: str
    key: Hashable  # spec.batch_key(request): equal keys may share one pipeline call
    future: asyncio.Future[GenerationResult]
    enqueued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # the awaiting task was cancelled; drop, never deliver
    batch: Batch | None = None  # set when a worker takes it

    def cancel(self) -> None:
        """Mark cancelled; interrupt the running batch once every request in it is cancelled.

        A batch shared with live requests keeps running (their images must not change); the
        cancelled request's result is simply dropped."""
        self.cancelled = True
        if self.batch is not None and all(p.cancelled for p in self.batch.items):
            self.batch.interrupt.set()

    @property
    def pixels(self) -> int:
        return self.request.width * self.request.height

    @property
    def live(self) -> bool:
        return not self.cancelled and not self.future.done()


@dataclass(eq=False, slots=True)
class Batch:
    """Requests sharing one pipeline call, and the flag that interrupts it."""

    items: list[Pending]
    interrupt: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)


class BatchTimer:
    """A moving average of recent batch durations, for Retry-After estimates."""

    def __init__(self, *, initial_s: float = 1.0, alpha: float = 0.3) -> None:
        self.average_s = initial_s
        self._alpha = alpha
        self._seen = False

    def record(self, seconds: float) -> None:
        if not self._seen:
            self.average_s, self._seen = seconds, True
        else:
            self.average_s += self._alpha * (seconds - self.average_s)


class RequestQueue:
    """Bounded FCFS queue of one model, with a per-client cap.

    Not thread-safe: every method runs on the event loop. `changed` is set whenever a request is
    pushed, so a waiting worker wakes up without polling.
    """

    def __init__(
        self, *, model_id: str, capacity: int, per_client: int, max_batch_size: int
    ) -> None:
        if capacity < 1 or per_client < 1 or max_batch_size < 1:
            raise ValueError(
                "queue_size, per_client_queue and max_batch_size must be >= 1, got "
                f"{capacity}, {per_client}, {max_batch_size}"
            )
        self.model_id = model_id
        self.capacity = capacity
        self.per_client = per_client
        self.max_batch_size = max_batch_size
        self.timer = BatchTimer()
        self.changed = asyncio.Event()
        self._items: list[Pending] = []
        self._per_client: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self._items))

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained by one batch-worth, at least 1."""
        batches_ahead = math.ceil((len(self._items) + 1) / self.max_batch_size)
        return max(1.0, round(batches_ahead * self.timer.average_s, 1))

    def push(self, pending: Pending) -> None:
        """Admit `pending` at the tail. Raises Overloaded when the queue or the client is full."""
        if len(self._items) >= self.capacity:
            raise Overloaded(
                f"the queue for model {self.model_id} is full ({self.capacity} requests); "
                "retry later",
                retry_after=self.retry_after(),
            )
        if self._per_client[pending.client_id] >= self.per_client:
            raise Overloaded(
                f"this client already has {self.per_client} requests queued for model "
                f"{self.model_id} (the per-client limit); retry later",
                retry_after=self.retry_after(),
            )
        self._items.append(pending)
        self._per_client[pending.client_id] += 1
        self.changed.set()

    def remove(self, pending: Pending) -> bool:
        """Take `pending` out if still queued; True when it was."""
        try:
            self._items.remove(pending)
        except ValueError:
            return False
        self._forget(pending)
        return True

    def head(self) -> Pending | None:
        """The oldest live request (dead ones at the front are discarded)."""
        while self._items and not self._items[0].live:
            self._forget(self._items.pop(0))
        return self._items[0] if self._items else None

    def compatible(self, head: Pending, *, max_size: int, max_pixels: int) -> list[Pending]:
        """Live requests sharing head's key, oldest first (head included), within the limits.

        `max_pixels` (0 = no limit) bounds the sum of width×height over the batch."""
        chosen: list[Pending] = []
        pixels = 0
        for item in self._items:
            if len(chosen) >= max_size:
                break
            if not item.live or item.key != head.key:
                continue
            if chosen and max_pixels and pixels + item.pixels > max_pixels:
                break
            chosen.append(item)
            pixels += item.pixels
        return chosen

    def take(self, batch: list[Pending]) -> None:
        """Remove the requests of a batch about to run."""
        for item in batch:
            self.remove(item)

    def drain(self) -> list[Pending]:
        """Remove and return everything queued (for failing them all)."""
        items, self._items = self._items, []
        self._per_client.clear()
        return items

    def _forget(self, pending: Pending) -> None:
        self._per_client[pending.client_id] -= 1
        if self._per_client[pending.client_id] <= 0:
            del self._per_client[pending.client_id]
