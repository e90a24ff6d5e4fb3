"""Admission control and the per-model queue.

One `RequestQueue` per model, owned by the engine and drained by that model's worker. Order is
first come, first served; a request is refused at once (Overloaded, never an unbounded wait)
when the model's queue holds `capacity` requests or its client already holds `per_client`.
Every change tells the queued jobs their 1-based position and an ETA from the measured rate of
work (its predicted seconds, imagine.engine.cost) and the work ahead of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict

from imagine.engine.cost import WorkRate
from imagine.engine.job import Job
from imagine.errors import Overloaded

# Retry-After is at least 1 s (whole seconds on the wire) and at most this.
MAX_RETRY_AFTER_S = 300.0


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
        self.rate = WorkRate()
        self.changed = asyncio.Event()
        self._items: list[Job] = []
        self._per_client: Counter[str] = Counter()
        self._running_ends_at = 0.0  # monotonic time the running batch should end; 0: none

    def __len__(self) -> int:
        return len(self._items)

    @property
    def running_remaining_s(self) -> float:
        """Seconds until the running batch should end (0 when none runs)."""
        return max(0.0, self._running_ends_at - time.monotonic()) if self._running_ends_at else 0.0

    def running(self, units: float) -> None:
        """The worker started a batch of `units` work (0: the batch ended)."""
        self._running_ends_at = time.monotonic() + self.rate.seconds(units) if units else 0.0
        self.renumber()

    def retry_after(self) -> float:
        """Seconds until there is likely room again: the running batch's rest plus the next
        batch's predicted time, from the queued requests' own cost; within [1, 300]."""
        first = self._items[: self.max_batch_size]
        units = self.rate.units_of(j.request for j in first)
        seconds = self.running_remaining_s + self.rate.seconds(units, calls=1 if first else 0)
        return min(MAX_RETRY_AFTER_S, max(1.0, round(seconds, 1)))

    def wait_s(self, pending: Job) -> float:
        """The predicted time until `pending` would be answered if queued now: the running
        batch's rest, the queued work and its own (one call per batch-worth)."""
        live = [j for j in self._items if j.live]
        calls = len(live) // self.max_batch_size + 1
        units = self.rate.units_of(j.request for j in [*live, pending])
        return self.running_remaining_s + self.rate.seconds(units, calls)

    def push(self, pending: Job, *, force: bool = False) -> None:
        """Admit `pending` at the tail. Raises Overloaded when the queue or the client is full,
        unless `force` (jobs accepted before a restart are queued again whatever the load)."""
        if force:
            self._admit(pending)
            return
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
        self._admit(pending)

    def _admit(self, pending: Job) -> None:
        self._items.append(pending)
        self._per_client[pending.client_id] += 1
        self.changed.set()
        self.renumber()

    def renumber(self) -> None:
        """Tell every queued job its position and ETA: the running batch's rest plus the
        predicted time of the work ahead of it, its own batch's included."""
        running = self.running_remaining_s
        ahead = 0.0
        size = self.max_batch_size
        for calls, start in enumerate(range(0, len(self._items), size), start=1):
            chunk = self._items[start : start + size]
            ahead += self.rate.units_of(job.request for job in chunk)
            eta = round(running + self.rate.seconds(ahead, calls), 3)
            for offset, job in enumerate(chunk):
                job.queued_at(start + offset + 1, eta)

    def remove(self, pending: Job) -> bool:
        """Take `pending` out if still queued; True when it was."""
        try:
            self._items.remove(pending)
        except ValueError:
            return False
        self._forget(pending)
        self.renumber()
        return True

    def head(self) -> Job | None:
        """The oldest live request (dead ones at the front are discarded)."""
        while self._items and not self._items[0].live:
            self._forget(self._items.pop(0))
        return self._items[0] if self._items else None

    def compatible(self, head: Job, *, max_size: int, max_pixels: int) -> list[Job]:
        """Live requests sharing head's key, oldest first (head included), within the limits.

        `max_pixels` (0 = no limit) bounds the sum of width×height over the batch."""
        chosen: list[Job] = []
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

    def take(self, batch: list[Job]) -> None:
        """Remove the requests of a batch about to run."""
        for item in batch:
            if item in self._items:
                self._items.remove(item)
                self._forget(item)
        self.renumber()

    def drain(self) -> list[Job]:
        """Remove and return everything queued (for failing them all)."""
        items, self._items = self._items, []
        self._per_client.clear()
        return items

    def _forget(self, pending: Job) -> None:
        self._per_client[pending.client_id] -= 1
        if self._per_client[pending.client_id] <= 0:
            del self._per_client[pending.client_id]


class ClientRateLimit:
    """Requests per minute per client (token digest, or address when auth is off), as a token
    bucket: a client may burst `per_minute` requests, then one every 60/per_minute seconds.
    At most `max_clients` are remembered (least recently seen forgotten first), so a flood of
    addresses cannot grow it without bound."""

    def __init__(self, *, per_minute: int, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, client_id: str) -> None:
        """Count one request of `client_id`. Raises Overloaded when its minute is used up."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        capacity = float(self.per_minute)
        tokens, at = self._buckets.pop(client_id, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * capacity / 60.0)
        if tokens < 1.0:
            self._buckets[client_id] = (tokens, now)
            wait = (1.0 - tokens) * 60.0 / capacity
            raise Overloaded(
                f"this client has used its {self.per_minute} requests per minute "
                "(client_requests_per_minute); retry later",
                retry_after=wait,
            )
        self._buckets[client_id] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
