"""Admission control and the per-model queue.

One `RequestQueue` per model, owned by the engine and drained by that model's worker. Order is
first come, first served; a request is refused at once (Overloaded, never an unbounded wait)
when the model's queue holds `capacity` requests or its client already holds `per_client`.
Every change tells the queued jobs their 1-based position and an ETA from the measured batch
time.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from imagine.engine.job import Job
from imagine.errors import Overloaded


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
        self._items: list[Job] = []
        self._per_client: Counter[str] = Counter()
        # Seconds until the running batch ends (the worker updates it): part of a queued ETA.
        self.running_remaining_s = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def retry_after(self) -> float:
        """Seconds until the queue has likely drained by one batch-worth, at least 1."""
        batches_ahead = math.ceil((len(self._items) + 1) / self.max_batch_size)
        return max(1.0, round(batches_ahead * self.timer.average_s, 1))

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
        """Tell every queued job its position and ETA: the running batch's remaining time plus
        one average batch per batch ahead of it, its own included."""
        for index, job in enumerate(self._items):
            batches = index // self.max_batch_size + 1
            eta = self.running_remaining_s + batches * self.timer.average_s
            job.queued_at(index + 1, round(eta, 3))

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
