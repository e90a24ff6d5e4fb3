"""The batch collector: picks the next pipeline call's requests from one model's queue.

Rules, in order:
- the oldest live request (the head) always goes next, so no key starves;
- requests with the head's batch key join it, oldest first, up to `max_size` images and
  `max_pixels` (sum of width×height, 0 = no limit);
- the collector waits for more compatible requests until `wait_s` after the head was admitted
  (monotonic clock) or the batch is full, whichever comes first. A head that already waited
  longer (the worker was busy) goes at once with whatever is compatible. The worker passes
  `wait_s = 0` while its model has no company (see Worker._contended).
Cancelled requests are removed from the queue when cancelled, and skipped here in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from imagine.engine.admission import RequestQueue
from imagine.engine.job import Batch, Job


async def next_batch(
    queue: RequestQueue, *, max_size: int, max_pixels: int, wait_s: float
) -> Batch:
    """Wait for and remove the next batch from `queue`; never returns an empty batch."""
    while True:
        queue.changed.clear()
        head = queue.head()
        if head is None:
            await queue.changed.wait()
            continue
        items = queue.compatible(head, max_size=max_size, max_pixels=max_pixels)
        remaining = head.enqueued_at + wait_s - time.monotonic()
        if remaining <= 0 or _full(queue, head, items, max_size):
            return _take(queue, items)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.changed.wait(), remaining)


def _full(queue: RequestQueue, head: Job, items: list[Job], max_size: int) -> bool:
    """No further request could join: the size cap is reached, or the pixel cap left one out."""
    if len(items) >= max_size:
        return True
    return len(queue.compatible(head, max_size=max_size, max_pixels=0)) > len(items)


def _take(queue: RequestQueue, items: list[Job]) -> Batch:
    queue.take(items)
    return Batch(items=items)
