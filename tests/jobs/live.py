"""Helpers for the job API tests: a live server on imagine/shapes, metrics, SSE reading."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from imagine.remote import iter_sse

MODEL = "imagine/shapes"
DEADLINE_S = 60.0
T = TypeVar("T")


def steps_done(base_url: str, headers: dict[str, str] | None = None) -> float:
    """`imagine_denoising_steps_total` for the shapes model (steps × images, counted as run)."""
    text = httpx.get(f"{base_url}/metrics", headers=headers or {}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "imagine_denoising_steps_total" and sample.labels["model"] == MODEL:
                return sample.value
    return 0.0


def poll(check: Callable[[], T | None], what: str, deadline_s: float = DEADLINE_S) -> T:
    """Call `check` until it returns a value (not None), or fail after the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sse(url: str, headers: dict[str, str] | None = None) -> Iterator[tuple[str, str, Any]]:
    """(event, id, data) of every event of an SSE stream until it ends."""
    with httpx.stream("GET", url, headers=headers or {}, timeout=DEADLINE_S) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield from iter_sse(response.iter_lines())
