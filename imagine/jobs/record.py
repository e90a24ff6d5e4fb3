"""The persisted job: what a client asked for, who owns it, where it stands, where its images are.

A `JobRecord` is plain data (JSON-serialisable through `to_dict`/`from_dict`), so every store
backend keeps it the same way and a restarted server can queue its requests again.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from imagine.request import JobState

__all__ = ["JobRecord", "JobState", "new_job_id"]


def new_job_id() -> str:
    """26 lowercase base32-ish characters, unguessable (130 bits), URL-safe."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(secrets.choice(alphabet) for _ in range(26))


@dataclass(slots=True)
class JobRecord:
    """One job as the store keeps it.

    `requests` holds the canonical GenerationRequest of each image as a dict
    (`dataclasses.asdict`), enough to run the job again after a restart. `outputs` are the names
    of the stored image files, in order (e.g. ["0.png", "1.png"]), filled when it succeeds.
    Times are Unix seconds (float). `expires_at` is set when the job ends: completed_at + TTL.
    """

    id: str
    owner: str  # the token digest when auth is on, else the client address
    model_id: str
    input: dict[str, Any]  # what the client sent, echoed back (the API's own field names)
    requests: list[dict[str, Any]]
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    error: str | None = None
    error_code: str | None = None
    outputs: list[str] = field(default_factory=list)
    logs: str = ""
    webhook: str | None = None
    webhook_events_filter: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    attempts: int = 0  # how many times a worker started it (a restart may start it again)
    api: str = "replicate"  # which API created it (renders it back in that API's shape)
    base_url: str = ""  # the server URL the client used (absolute URLs in webhook payloads)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = str(self.state)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRecord:
        d = dict(d)
        d["state"] = JobState(d["state"])
        return cls(**d)
