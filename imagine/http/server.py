"""How imagine runs uvicorn: connection hygiene that uvicorn alone does not give.

uvicorn closes a keep-alive connection that stays quiet after a response, but a connection that
never sends a request, or sends its head a byte at a time (slowloris), stays open forever: 1,100
idle sockets under `ulimit -n 1024` made the server unreachable. Here:
- the request head must arrive within `head_timeout_s` of the connection opening (or of the
  previous response), the body within `body_timeout_s` of the head; else the connection closes;
- at most `max_connections` connections and requests at once (uvicorn's limit_concurrency:
  past it a request is answered 503 at once, never left hanging);
- the soft open-files limit is raised to the hard one at start, and `max_connections` kept
  below it, so the accept loop never runs out of descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from imagine.settings import Settings

__all__ = ["guarded_protocol", "uvicorn_config"]

log = logging.getLogger(__name__)

# Descriptors kept free of connections: model files, the job store, Redis, logs.
_RESERVED_FDS = 256


def guarded_protocol(*, head_timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with deadlines on the request head and body."""

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(head_timeout_s)

        def handle_events(self) -> None:
            waiting_head = self.conn.their_state is h11.IDLE
            super().handle_events()
            if waiting_head and self.conn.their_state is h11.SEND_BODY:
                self._arm(body_timeout_s)
            elif waiting_head and self.conn.their_state is not h11.IDLE:
                self._disarm()  # a whole request is in: the app's time, not the client's

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm(head_timeout_s)  # the next request's head, even if dribbled

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            if seconds > 0:
                self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            state = self.conn.their_state
            if state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                if state is h11.SEND_BODY and self.cycle is not None:
                    self.cycle.disconnected = True  # the app sees the client as gone
                    self.cycle.message_event.set()
                self.transport.close()

    return GuardedH11Protocol


def connection_cap(settings: Settings) -> int:
    """`settings.max_connections`, within the open-files limit (raised to its hard maximum)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    cap = min(settings.max_connections, max(16, soft - _RESERVED_FDS))
    if cap < settings.max_connections:
        log.warning(
            "max_connections lowered from %d to %d: the open-files limit is %d",
            settings.max_connections,
            cap,
            soft,
        )
    return cap


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration `imagine serve` runs (tests serve through it too)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(
            head_timeout_s=settings.head_timeout_s, body_timeout_s=settings.body_timeout_s
        ),
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": connection_cap(settings),
        "log_level": settings.log_level.lower(),
        "log_config": None,  # keep our handlers (and their redaction filter)
        **overrides,
    }
    return uvicorn.Config(app, **options)
