"""No accepted job is lost: `imagine serve` is killed with SIGKILL while jobs run, started
again on the same data folder, and every job succeeds exactly once. Results expire after the TTL
(410 Gone)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve, serve_process
from tests.jobs.live import MODEL, poll

pytestmark = pytest.mark.slow

JOBS = 10
STEPS = 30


@contextmanager
def imagine_serve(data_dir: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`imagine serve`, jobs in `data_dir`, batches of two, no batch window."""
    env = {
        "IMAGINE_DATA_DIR": str(data_dir),
        "IMAGINE_MAX_BATCH_SIZE": "2",
        "IMAGINE_BATCH_WAIT_MS": "0",
    }
    with serve_process(env, log) as (proc, url):
        yield proc, url


def _all(url: str) -> dict[str, dict]:
    page = httpx.get(f"{url}/v1/predictions").json()
    return {p["id"]: p for p in page["results"]}


def test_kill_9_while_jobs_run_then_every_job_succeeds_once(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with imagine_serve(tmp_path / "data", log) as (proc, url):
        ids = []
        for i in range(JOBS):
            body = {"input": {"prompt": "a red circle", "seed": i, "num_inference_steps": STEPS}}
            r = httpx.post(f"{url}/v1/models/{MODEL}/predictions", json=body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])

        def mid_way() -> dict[str, dict] | None:
            jobs = _all(url)
            statuses = [p["status"] for p in jobs.values()]
            some_done = "succeeded" in statuses
            return jobs if some_done and "processing" in statuses else None

        before = poll(mid_way, "some jobs done and some running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done_before = {i: p for i, p in before.items() if p["status"] == "succeeded"}
    assert 0 < len(done_before) < JOBS

    with imagine_serve(tmp_path / "data", log) as (_, url):

        def finished() -> dict[str, dict] | None:
            jobs = _all(url)
            return jobs if all(jobs[i]["status"] == "succeeded" for i in ids) else None

        after = poll(finished, "every job to succeed after the restart", deadline_s=180)
        for job_id in ids:
            job = after[job_id]
            assert job["logs"].count("succeeded") == 1, job["logs"]  # completed exactly once
            image = httpx.get(job["output"])
            assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        for job_id, job in done_before.items():  # finished before the kill: not run again
            assert after[job_id]["completed_at"] == job["completed_at"]
            assert after[job_id]["logs"].count("starting") == 1
    assert "had already ended" not in log.read_text()


def test_results_expire_after_the_ttl(tmp_path: Path) -> None:
    settings = Settings(preload=[MODEL], job_ttl_s=1.0, data_dir=tmp_path)
    with serve(create_app(settings, build_engine(settings))) as url:
        r = httpx.post(
            f"{url}/v1/models/{MODEL}/predictions",
            json={"input": {"prompt": "a blue square"}},
            headers={"prefer": "wait"},
            timeout=70,
        )
        job = r.json()
        assert job["status"] == "succeeded"
        assert httpx.get(job["output"]).status_code == 200

        def gone() -> bool | None:
            return httpx.get(job["urls"]["get"]).status_code == 410 or None

        poll(gone, "the job to expire")
        expired = httpx.get(job["urls"]["get"])
        assert expired.json()["code"] == "job_expired"
        assert httpx.get(job["output"]).status_code == 410
