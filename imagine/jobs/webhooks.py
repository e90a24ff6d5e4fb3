"""Webhook delivery for jobs: Replicate-shaped events, Standard Webhooks signatures.

A job created with `webhook` gets its prediction object POSTed on the events of its filter
("start", "output", "logs", "completed"), off the request path, so a slow or dead receiver never
stalls generation. The rules (why: order, bounded cost, and no surprise targets):

* Each job has its own FIFO and worker task: a job's messages arrive in the order sent and
  "completed" last; different jobs deliver in parallel (at most `concurrency` requests at once).
* "output" and "logs" share a per-job window of `throttle_s`: the first goes at once, later ones
  coalesce into one slot (the latest wins: each carries the whole prediction) sent when the
  window opens. "completed" discards that slot (its payload supersedes it) and closes the job.
* Connection errors, timeouts, 5xx and 429 are retried with capped exponential backoff under the
  same `webhook-id` (fresh timestamp and signature per attempt: receivers reject stale ones); 2xx
  ends it; other statuses give up at once (redirects too: their targets were never checked).
* At most `max_pending` messages wait or are in flight; past it the oldest that are not
  "completed" are dropped. Each message reports one outcome to `on_outcome` ("delivered",
  "failed" or "dropped"), and each retry reports "retried".

Receivers check messages with `verify` (https://www.standardwebhooks.com).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from imagine.errors import InvalidRequest

log = logging.getLogger(__name__)

EVENTS = ("start", "output", "logs", "completed")
THROTTLED = frozenset({"output", "logs"})
DEFAULT_ALLOW = ("127.0.0.0/8", "::1", "localhost")
_FINISHED_MEMORY = 10_000  # completed job ids remembered, so late events for them are ignored


def _key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError; never echo the secret itself
        raise ValueError("webhook secret must be 'whsec_' followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value ("v1,<base64 HMAC-SHA256>") of one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes | str, *, tolerance_s: float = 300
) -> bool:
    """True when `headers` carry a valid v1 signature of `body` under `secret`, made within
    `tolerance_s` of now (which blocks replays of old captured messages). For receivers: pass the
    raw request body, not re-serialised JSON, as the signature covers the exact bytes."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, sigs = (
        lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (msg_id and stamp and sigs):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    data = body.encode() if isinstance(body, str) else body
    expected = sign(secret, msg_id, timestamp, data)
    # The header may list several space-separated signatures (e.g. during key rotation).
    return any(hmac.compare_digest(s.encode(), expected.encode()) for s in sigs.split())


def check_events(events: Sequence[str] | None) -> list[str]:
    """The normalised events filter (deduplicated, canonical order); None or empty means all."""
    if not events:
        return list(EVENTS)
    # A bare string is a Sequence too, but "start" is not ["start"]: refuse it as unknown.
    unknown = [events] if isinstance(events, str) else [e for e in events if e not in EVENTS]
    if unknown:
        raise InvalidRequest(
            f"webhook_events_filter must be a list of events from {', '.join(EVENTS)};"
            f" unknown: {unknown!r}",
            field="webhook_events_filter",
        )
    return [e for e in EVENTS if e in events]


def check_target(url: str, allow: Sequence[str]) -> None:
    """Raise InvalidRequest(field="webhook") unless `url` is an http(s) URL whose host is listed.

    `allow` holds CIDR networks or exact hostnames. The host is matched literally: an IP must lie
    in a listed network, a name must equal a listed name. Names are deliberately not resolved
    here: a DNS answer can change between this check and the send (DNS rebinding), so resolving
    would only give a false sense of safety; listing exact names puts the trust in the operator.
    The URL is parsed by httpx, the same parser that sends, so both agree on what the host is.
    """
    listed = ", ".join(allow) or "(empty)"
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else None
        port = parsed.port if parsed is not None else None
    except (httpx.InvalidURL, ValueError, TypeError):
        parsed, port = None, None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest("webhook must be an absolute http:// or https:// URL", field="webhook")
    if port is not None and not 0 < port < 65536:
        raise InvalidRequest(f"webhook port must be 1-65535, got {port}", field="webhook")
    host = parsed.host.lower()
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in allow:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if ip is None and host == entry.lower():
                return
            continue
        if ip is not None and ip.version == net.version and ip in net:
            return
    raise InvalidRequest(
        f"webhook host {host!r} is not allowed; allowed hosts/networks: {listed}", field="webhook"
    )


def redact(url: str) -> str:
    """`url` without query, fragment or userinfo, which may hold tokens; safe to log."""
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None, userinfo=b""))
    except (httpx.InvalidURL, ValueError, TypeError):
        return "<malformed url>"


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


@dataclass(eq=False)
class _Message:
    job: _Job
    url: str
    event: str
    body: bytes
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    seq: int = 0
    in_flight: bool = False
    dropped: bool = False  # shed while in flight: its worker stops before the next attempt


@dataclass(eq=False)
class _Job:
    id: str
    queue: deque[_Message] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None
    slot: _Message | None = None  # the coalesced output/logs waiting for the window to open
    timer: asyncio.TimerHandle | None = None
    window_start: float = float("-inf")


class WebhookSender:
    """Delivers job webhooks in the background; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        secret: str | None,
        allow: Sequence[str] = DEFAULT_ALLOW,
        timeout_s: float = 5.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        throttle_s: float = 0.5,
        max_pending: int = 10_000,
        concurrency: int = 16,
        on_outcome: Callable[[str], None] = lambda outcome: None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if secret is not None:
            _key(secret)  # a malformed secret fails at startup, not at the first delivery
        self._secret, self._allow, self._on_outcome = secret, tuple(allow), on_outcome
        self._timeout_s, self._retries = timeout_s, retries
        self._backoff_s, self._backoff_max_s = backoff_s, backoff_max_s
        self._throttle_s, self._max_pending = throttle_s, max_pending
        self._client, self._owns_client = client, client is None
        self._sem = asyncio.Semaphore(concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: OrderedDict[str, _Job] = OrderedDict()  # least recently touched first
        self._pending: OrderedDict[int, _Message] = OrderedDict()  # queued or in flight, by age
        self._finished: OrderedDict[str, None] = OrderedDict()  # jobs whose "completed" was sent
        self._seq = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._client is None:
            # trust_env=False: an HTTP(S)_PROXY from the environment would carry the webhook to a
            # host the allow-list never saw. No redirects: their targets are unchecked.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout_s), follow_redirects=False, trust_env=False
            )

    def send(
        self, job_id: str, url: str, event: str, payload: dict, events_filter: Sequence[str]
    ) -> None:
        """Queue `event` for `job_id` (non-blocking). Safe to call from other threads."""
        if self._loop is None:
            raise RuntimeError("WebhookSender.start() must be awaited before send()")
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        if event not in events_filter:
            return
        # Serialised now: the caller may mutate `payload` after this returns.
        body = json.dumps(payload, separators=(",", ":"), default=_json_default).encode()
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._accept(job_id, url, event, body)
        else:
            self._loop.call_soon_threadsafe(self._accept, job_id, url, event, body)

    async def flush(self, timeout: float) -> bool:
        """Wait until every pending message is delivered or given up; False on timeout."""
        # One turn of the loop first: a send() from another thread that returned before this
        # call is already in the loop's FIFO ready queue, ahead of this task's wake-up.
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop at once; whatever is still pending counts as dropped. `flush` first to drain."""
        workers = [job.worker for job in self._jobs.values() if job.worker]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for job in self._jobs.values():
            if job.timer:
                job.timer.cancel()
        for _ in range(len(self._pending) + sum(1 for j in self._jobs.values() if j.slot)):
            self._outcome("dropped")
        self._jobs.clear()
        self._pending.clear()
        self._idle.set()
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    def _accept(self, job_id: str, url: str, event: str, body: bytes) -> None:
        if job_id in self._finished:
            log.debug("webhook %s for job %s after completed: ignored", event, job_id)
            return
        try:
            check_target(url, self._allow)  # again: the allow-list may have changed since
        except InvalidRequest:
            log.warning("webhook for job %s refused: %s not allowed", job_id, redact(url))
            self._outcome("failed")
            return
        self._sweep()
        if (job := self._jobs.get(job_id)) is None:
            job = self._jobs[job_id] = _Job(job_id)
        self._jobs.move_to_end(job_id)
        msg = _Message(job, url, event, body)
        now = asyncio.get_running_loop().time()
        if event in THROTTLED and (job.slot or now - job.window_start < self._throttle_s):
            job.slot = msg  # coalesce: the latest payload wins
            if job.timer is None:
                delay = job.window_start + self._throttle_s - now
                job.timer = asyncio.get_running_loop().call_later(delay, self._release, job)
        else:
            if event in THROTTLED:
                job.window_start = now
            elif event == "completed":
                if job.timer:
                    job.timer.cancel()
                job.slot = job.timer = None  # superseded by the final payload
                self._finished[job_id] = None
                if len(self._finished) > _FINISHED_MEMORY:
                    self._finished.popitem(last=False)
            self._enqueue(msg)
        self._check_idle()

    def _release(self, job: _Job) -> None:
        job.timer = None
        if job.slot is not None:
            msg, job.slot = job.slot, None
            job.window_start = asyncio.get_running_loop().time()
            self._enqueue(msg)
        self._check_idle()

    def _enqueue(self, msg: _Message) -> None:
        self._seq += 1
        msg.seq = self._seq
        self._pending[msg.seq] = msg
        msg.job.queue.append(msg)
        self._shed()
        if msg.job.queue and msg.job.worker is None:
            msg.job.worker = asyncio.get_running_loop().create_task(self._run(msg.job))

    def _shed(self) -> None:
        """Drop the oldest non-"completed" messages while over `max_pending`."""
        while len(self._pending) > self._max_pending:
            victim = next((m for m in self._pending.values() if m.event != "completed"), None)
            if victim is None:
                return  # only "completed" left: never dropped, so the bound yields to them
            del self._pending[victim.seq]
            if victim.in_flight:
                victim.dropped = True
            else:
                victim.job.queue.remove(victim)
            log.warning("webhook queue full: dropped %s for job %s", victim.event, victim.job.id)
            self._outcome("dropped")

    def _sweep(self) -> None:
        """Forget idle jobs whose throttle window has passed, least recently touched first.
        (A finished job's id stays in `_finished`, so its late events are still ignored.)"""
        now = asyncio.get_running_loop().time()
        while self._jobs:
            job = next(iter(self._jobs.values()))
            if job.queue or job.worker or job.slot:
                return
            if job.id not in self._finished and now - job.window_start < self._throttle_s:
                return
            del self._jobs[job.id]

    def _check_idle(self) -> None:
        if self._pending or any(job.slot for job in self._jobs.values()):
            self._idle.clear()
        else:
            self._idle.set()

    def _outcome(self, outcome: str) -> None:
        try:
            self._on_outcome(outcome)
        except Exception:  # a broken metrics hook must not stop delivery
            log.exception("webhook on_outcome hook raised")

    async def _run(self, job: _Job) -> None:
        try:
            while job.queue:
                msg = job.queue.popleft()
                msg.in_flight = True
                try:
                    await self._deliver(msg)
                except Exception:  # keep the worker alive for the job's later messages
                    log.exception("webhook delivery to %s crashed", redact(msg.url))
                    self._outcome("failed")
                self._pending.pop(msg.seq, None)
        finally:
            job.worker = None
            self._check_idle()

    async def _deliver(self, msg: _Message) -> None:
        assert self._client is not None, "start() not awaited"
        where = redact(msg.url)
        for attempt in range(self._retries + 1):
            if attempt:
                self._outcome("retried")
                await asyncio.sleep(min(self._backoff_s * 2 ** (attempt - 1), self._backoff_max_s))
            if msg.dropped:
                return
            stamp = int(time.time())
            headers = {"content-type": "application/json", "webhook-id": msg.id}
            headers["webhook-timestamp"] = str(stamp)
            if self._secret is not None:
                headers["webhook-signature"] = sign(self._secret, msg.id, stamp, msg.body)
            try:
                # Streamed and never read: a receiver's response body is of no use here.
                request = self._client.stream("POST", msg.url, content=msg.body, headers=headers)
                async with self._sem, request as response:
                    status = response.status_code
            except httpx.TransportError as exc:  # connect/read timeouts, refused, reset
                log.info("webhook %s to %s: %s", msg.event, where, type(exc).__name__)
                continue
            if msg.dropped:
                return  # its outcome ("dropped") is already counted
            if 200 <= status < 300:
                self._outcome("delivered")
                return
            if status != 429 and status < 500:
                log.warning("webhook %s to %s: HTTP %d, giving up", msg.event, where, status)
                self._outcome("failed")
                return
            log.info("webhook %s to %s: HTTP %d", msg.event, where, status)
        if not msg.dropped:
            log.warning("webhook %s to %s: gave up after %d tries", msg.event, where, attempt + 1)
            self._outcome("failed")
