"""Hub lookups that a slow or stalled Hugging Face Hub cannot turn into a stalled server.

    HubLookups.lookup(repo_id, work) → HubAnswer    (work: the blocking huggingface_hub call)
      ├─ an answer remembered for this id         → at once (misses: settings.hub_miss_ttl_s,
      │                                              failures: settings.hub_failure_ttl_s)
      ├─ a lookup of this id already running      → shares it (one Hub call per id)
      ├─ settings.hub_max_lookups already running  → Overloaded (429 + Retry-After) at once
      ├─ this client's hub_lookups_per_client running → Overloaded at once (one client must
      │                                              not take every lookup with made-up ids)
      └─ else runs `work` on the lookups' own threads (settings.hub_lookup_threads)

The caller either waits for the answer (at most settings.hub_lookup_timeout_s, then Overloaded)
or, inside `pending_instead_of_waiting()`, gets HubLookupPending at once and awaits it without
holding a thread (ImageService.describe does: the threads validation and encoding need never
wait on the Hub). A failed lookup (timeout, network error, the Hub's 429/5xx) is a miss for the
client, marks the Hub degraded in ENDPOINT (the /health report) and is not retried for a while.

`bound_timeouts` gives huggingface_hub's HTTP client connect and read timeouts. That client, the
endpoint (HF_ENDPOINT, read at import) and so the Hub's health are one per process, which is
why ENDPOINT is a module-level object while each registry keeps its own lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagine.errors import Overloaded
from imagine.settings import Settings

__all__ = [
    "ENDPOINT",
    "HubAnswer",
    "HubLookupPending",
    "HubLookups",
    "HubStatus",
    "bound_timeouts",
    "pending_instead_of_waiting",
]

log = logging.getLogger(__name__)

_PRUNE_ABOVE = 1024  # remembered answers beyond this drop the expired ones

_no_waiting: ContextVar[bool] = ContextVar("imagine_hub_no_waiting", default=False)
_client: ContextVar[str | None] = ContextVar("imagine_hub_client", default=None)


@contextlib.contextmanager
def pending_instead_of_waiting(client: str | None = None) -> Iterator[None]:
    """Within this block (in this thread), a lookup whose answer is not known yet raises
    HubLookupPending instead of blocking; lookups it starts count against `client`'s share
    (settings.hub_lookups_per_client; None: nobody's, as for preloads)."""
    tokens = _no_waiting.set(True), _client.set(client)
    try:
        yield
    finally:
        _no_waiting.reset(tokens[0])
        _client.reset(tokens[1])


@dataclass(frozen=True, slots=True)
class HubAnswer:
    """What the Hub said about one repo: the folder of the files fetched, or None and why."""

    folder: Path | None
    note: str = ""  # why there is no folder, for the client's error message
    expires: float = 0.0  # time.monotonic() after which the Hub is asked again


class HubLookupPending(Exception):
    """The lookup of `repo_id` is running; `await wait()`, then ask again. Never leaves the
    service layer (not an ImagineError)."""

    def __init__(self, repo_id: str, future: Future[HubAnswer], timeout_s: float) -> None:
        super().__init__(f"Hub lookup of {repo_id} in progress")
        self.repo_id = repo_id
        self._future = future
        self._timeout_s = timeout_s

    async def wait(self) -> None:
        """Until the lookup ends, holding no thread. Raises Overloaded after
        settings.hub_lookup_timeout_s (the lookup goes on). Cancelling the caller leaves the
        lookup to the others who share it."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def wake(_: Future[HubAnswer]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(done.set)

        self._future.add_done_callback(wake)
        try:
            async with asyncio.timeout(self._timeout_s):
                await done.wait()
        except TimeoutError:
            raise _still_running(self.repo_id, self._timeout_s) from None


class HubStatus:
    """Recent Hub outcomes for /health: degraded from a failure until a success, or until a
    quiet period passes without another failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0  # in a row
        self._last_failure: float | None = None
        self._last_error = ""
        self._running = 0

    def succeeded(self) -> None:
        with self._lock:
            self._failures, self._last_failure = 0, None

    def failed(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            self._last_failure, self._last_error = time.monotonic(), error

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1

    def report(self, *, quiet_s: float) -> dict[str, Any]:
        """`{"state": "ok" | "degraded", "lookups_running": n}`, plus when degraded
        `failures` (in a row), `last_error` and `last_failure_s_ago`."""
        with self._lock:
            ago = None if self._last_failure is None else time.monotonic() - self._last_failure
            body: dict[str, Any] = {"state": "ok", "lookups_running": self._running}
            if ago is not None and ago < quiet_s:
                body.update(
                    state="degraded",
                    failures=self._failures,
                    last_error=self._last_error,
                    last_failure_s_ago=round(ago, 1),
                )
            return body


ENDPOINT = HubStatus()  # the process's Hub (see the module docstring)


class HubLookups:
    """Bounded, single-flight, remembered Hub lookups for one registry (module docstring)."""

    def __init__(self, *, settings: Settings, status: HubStatus = ENDPOINT) -> None:
        self._settings = settings
        self._status = status
        self._pool = ThreadPoolExecutor(
            max_workers=settings.hub_lookup_threads, thread_name_prefix="imagine-hub"
        )
        self._lock = threading.Lock()
        self._running: dict[str, Future[HubAnswer]] = {}
        self._answers: dict[str, HubAnswer] = {}
        self._started_by: dict[str, str] = {}  # running repo id → the client that started it

    def lookup(self, repo_id: str, work: Callable[[], str | Path]) -> HubAnswer:
        """The Hub's answer for `repo_id`; `work` fetches its files and returns their folder
        (raising when it cannot). Raises Overloaded (too many lookups, or no answer within
        settings.hub_lookup_timeout_s), HubLookupPending (within pending_instead_of_waiting)."""
        s = self._settings
        with self._lock:
            known = self._answers.get(repo_id)
            if known is not None and time.monotonic() < known.expires:
                return known
            future = self._running.get(repo_id)
            if future is None:
                if len(self._running) >= s.hub_max_lookups:
                    raise Overloaded(
                        f"Model {repo_id}: {len(self._running)} Hub lookups are already running "
                        f"(hub_max_lookups); retry in {s.hub_read_timeout_s:g} s",
                        retry_after=s.hub_read_timeout_s,
                    )
                client = _client.get()
                if client is not None:
                    mine = sum(1 for c in self._started_by.values() if c == client)
                    if mine >= s.hub_lookups_per_client:
                        raise Overloaded(
                            f"Model {repo_id}: this client already has {mine} Hub lookups "
                            f"running (hub_lookups_per_client); retry in "
                            f"{s.hub_read_timeout_s:g} s",
                            retry_after=s.hub_read_timeout_s,
                        )
                    self._started_by[repo_id] = client
                future = self._pool.submit(self._run, repo_id, work)
                self._running[repo_id] = future  # before _run can end: it needs the lock
        if _no_waiting.get() and not future.done():
            raise HubLookupPending(repo_id, future, s.hub_lookup_timeout_s)
        try:
            return future.result(timeout=s.hub_lookup_timeout_s)
        except FutureTimeout:
            raise _still_running(repo_id, s.hub_lookup_timeout_s) from None

    def _run(self, repo_id: str, work: Callable[[], str | Path]) -> HubAnswer:
        s = self._settings
        try:
            with self._status.running():
                folder = Path(work())
            answer = HubAnswer(folder, expires=time.monotonic() + s.hub_miss_ttl_s)
            self._status.succeeded()
        except Exception as exc:
            failure = _failure(exc)
            log.info("hub lookup of %s failed: %s", repo_id, failure or exc)
            if failure is None:  # the Hub answered: no such repo, or not one we can read
                self._status.succeeded()
                answer = HubAnswer(None, "", time.monotonic() + s.hub_miss_ttl_s)
            else:
                self._status.failed(failure)
                note = f"no answer: {failure}; not asked again for {s.hub_failure_ttl_s:g} s"
                answer = HubAnswer(None, note, time.monotonic() + s.hub_failure_ttl_s)
        with self._lock:
            self._running.pop(repo_id, None)
            self._started_by.pop(repo_id, None)
            self._answers[repo_id] = answer
            if len(self._answers) > _PRUNE_ABOVE:
                now = time.monotonic()
                for key in [k for k, a in self._answers.items() if a.expires <= now]:
                    del self._answers[key]
        return answer


def _still_running(repo_id: str, timeout_s: float) -> Overloaded:
    return Overloaded(
        f"Model {repo_id}: the Hugging Face Hub has not answered in {timeout_s:g} s "
        "(hub_lookup_timeout_s); retry later",
        retry_after=timeout_s,
    )


def _failure(exc: BaseException) -> str | None:
    """Why the Hub could not answer (a timeout, a network error, its 429/5xx), or None when it
    did answer (no such repo, gated, not found...). Looks through the exception's causes:
    snapshot_download reports a timeout as LocalEntryNotFoundError from the timeout."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, httpx2.TransportError):
            return f"{type(seen).__name__}: {seen}"
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            code = seen.response.status_code
            if code == 429 or code >= 500:
                return f"HTTP {code}"
        seen = seen.__cause__ or seen.__context__
    return None


_bound: tuple[float, float] | None = None
_bound_lock = threading.Lock()


def bound_timeouts(*, connect_s: float, read_s: float) -> None:
    """Make every request of huggingface_hub's shared HTTP client give up after `connect_s` to
    connect and `read_s` between bytes (write and pool waits: `read_s`), tighter per-call
    timeouts kept. huggingface_hub passes `timeout=None` (wait forever) on calls such as
    repo_info, which a client default cannot override, so a request hook sets them. Installs
    a client factory (process-wide, like the client itself); idempotent."""
    global _bound
    import httpx2
    import huggingface_hub
    from huggingface_hub.utils._http import default_client_factory

    caps = {"connect": connect_s, "read": read_s, "write": read_s, "pool": read_s}

    def bound(request: httpx2.Request) -> None:
        asked = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            key: cap if asked.get(key) is None else min(asked[key], cap)
            for key, cap in caps.items()
        }

    def client() -> httpx2.Client:
        made = default_client_factory()
        made.event_hooks["request"].append(bound)
        return made

    with _bound_lock:
        if _bound != (connect_s, read_s):
            huggingface_hub.set_client_factory(client)
            _bound = (connect_s, read_s)
