"""HubLookups and HubStatus without a network: the lookup's work is a plain function the test
holds on an Event, failures are the exceptions huggingface_hub's HTTP client raises; then
huggingface_hub's real client against a tarpit (accepts, never answers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
import pytest

from imagine.errors import Overloaded
from imagine.models import hub
from imagine.settings import Settings
from tests.http.tarpit import Tarpit


def lookups(**settings: Any) -> tuple[hub.HubLookups, hub.HubStatus]:
    status = hub.HubStatus()
    return hub.HubLookups(settings=Settings(preload=[], **settings), status=status), status


class Work:
    """A lookup's work that counts its calls and, while `gate` is unset, blocks."""

    def __init__(self, result: Callable[[], str]) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self._result = result

    def __call__(self) -> str:
        self.calls += 1
        assert self.gate.wait(timeout=30)
        return self._result()


def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_concurrent_lookups_of_one_id_share_one_call(tmp_path: Path) -> None:
    hubs, _ = lookups()
    work = Work(lambda: str(tmp_path))
    answers: list[hub.HubAnswer] = []
    threads = [
        threading.Thread(target=lambda: answers.append(hubs.lookup("org/a", work)))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    until(lambda: work.calls == 1)
    work.gate.set()
    for t in threads:
        t.join(timeout=10)
    assert work.calls == 1 and [a.folder for a in answers] == [tmp_path] * 10


def test_misses_are_remembered_for_their_ttl() -> None:
    hubs, status = lookups(hub_miss_ttl_s=0.3)
    calls = 0

    def missing() -> str:
        nonlocal calls
        calls += 1
        raise OSError("404 Repository Not Found")  # the Hub answered: no such repo

    first = hubs.lookup("org/missing", missing)
    assert first.folder is None and first.note == "" and calls == 1
    assert hubs.lookup("org/missing", missing).folder is None and calls == 1
    assert status.report(quiet_s=60)["state"] == "ok"  # a miss is an answer
    until(lambda: hubs.lookup("org/missing", missing).folder is None and calls == 2)


def test_timeouts_mark_the_hub_degraded_until_a_success(tmp_path: Path) -> None:
    hubs, status = lookups(hub_failure_ttl_s=60)

    def stalled() -> str:
        try:
            raise httpx2.ReadTimeout("timed out")
        except httpx2.ReadTimeout as exc:  # as snapshot_download reports it
            raise huggingface_hub.errors.LocalEntryNotFoundError("no snapshot") from exc

    answer = hubs.lookup("org/slow", stalled)
    assert answer.folder is None and "no answer: ReadTimeout" in answer.note
    report = status.report(quiet_s=60)
    assert report["state"] == "degraded" and report["failures"] == 1, report
    assert "ReadTimeout" in report["last_error"]
    assert status.report(quiet_s=0)["state"] == "ok"  # after a quiet period
    hubs.lookup("org/fine", lambda: str(tmp_path))
    assert status.report(quiet_s=60) == {"state": "ok", "lookups_running": 0}


def test_lookups_past_the_bound_are_refused_at_once(tmp_path: Path) -> None:
    hubs, status = lookups(hub_max_lookups=2, hub_lookup_threads=1)
    work = Work(lambda: str(tmp_path))
    with hub.pending_instead_of_waiting():
        for repo in ("org/a", "org/b"):
            with pytest.raises(hub.HubLookupPending):
                hubs.lookup(repo, work)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="2 Hub lookups are already running") as err:
            hubs.lookup("org/c", work)
        assert time.monotonic() - started < 1 and err.value.retry_after > 0
        with pytest.raises(hub.HubLookupPending):  # an id already running is still shared
            hubs.lookup("org/a", work)
    until(lambda: status.report(quiet_s=60)["lookups_running"] == 1)  # one thread
    work.gate.set()
    assert hubs.lookup("org/a", work).folder == tmp_path
    assert hubs.lookup("org/c", work).folder == tmp_path  # room again
    assert work.calls == 3


async def test_a_pending_lookup_is_awaited_without_a_thread(tmp_path: Path) -> None:
    hubs, _ = lookups()
    work = Work(lambda: str(tmp_path))
    with hub.pending_instead_of_waiting(), pytest.raises(hub.HubLookupPending) as pending:
        hubs.lookup("org/a", work)
    threading.Timer(0.05, work.gate.set).start()
    await pending.value.wait()
    with hub.pending_instead_of_waiting():
        assert hubs.lookup("org/a", work).folder == tmp_path
    assert work.calls == 1


async def test_waiting_is_bounded(tmp_path: Path) -> None:
    hubs, _ = lookups(hub_lookup_timeout_s=0.2)
    work = Work(lambda: str(tmp_path))
    try:
        with pytest.raises(Overloaded, match="has not answered in 0.2 s"):
            hubs.lookup("org/a", work)  # blocking callers (preload) too
        with hub.pending_instead_of_waiting(), pytest.raises(hub.HubLookupPending) as pending:
            hubs.lookup("org/a", work)
        with pytest.raises(Overloaded, match="hub_lookup_timeout_s"):
            await pending.value.wait()
    finally:
        work.gate.set()
    assert work.calls == 1  # both waited on the one lookup


def test_huggingface_hubs_client_times_out_on_a_stalled_hub() -> None:
    # repo_info and friends pass timeout=None (wait forever): the hook bounds them anyway.
    hub.bound_timeouts(connect_s=1.0, read_s=0.5)
    try:
        with Tarpit() as tarpit:
            started = time.monotonic()
            with pytest.raises(httpx2.ReadTimeout):
                huggingface_hub.get_session().get(f"{tarpit.url}/api/models/x/y", timeout=None)
            assert time.monotonic() - started < 5 and tarpit.accepted == 1
    finally:
        defaults = Settings(preload=[])
        hub.bound_timeouts(
            connect_s=defaults.hub_connect_timeout_s, read_s=defaults.hub_read_timeout_s
        )


def test_one_client_cannot_take_every_lookup(tmp_path: Path) -> None:
    hubs, _ = lookups(hub_max_lookups=8, hub_lookups_per_client=2)
    work = Work(lambda: str(tmp_path))
    try:
        with hub.pending_instead_of_waiting("greedy"):
            for repo in ("org/a", "org/b"):
                with pytest.raises(hub.HubLookupPending):
                    hubs.lookup(repo, work)
            with pytest.raises(Overloaded, match="hub_lookups_per_client") as err:
                hubs.lookup("org/c", work)
            assert err.value.retry_after > 0
            with pytest.raises(hub.HubLookupPending):  # its running ones are still shared
                hubs.lookup("org/a", work)
        with hub.pending_instead_of_waiting("polite"), pytest.raises(hub.HubLookupPending):
            hubs.lookup("org/c", work)  # another client's lookup still starts
    finally:
        work.gate.set()
    for repo in ("org/a", "org/b", "org/c"):
        assert hubs.lookup(repo, work).folder == tmp_path
    with hub.pending_instead_of_waiting("greedy"), pytest.raises(hub.HubLookupPending):
        hubs.lookup("org/d", work)  # its lookups ended: room again
