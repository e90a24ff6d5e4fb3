"""Faults injected with real parts on a live server (issue 9): SIGTERM with requests in flight,
Redis killed and restarted or frozen under the cache, a model that fails to load, a poison
prompt among a batch of eight."""

from __future__ import annotations

import io
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imagine.cache import create_cache
from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve, serve_process
from tests.jobs.live import MODEL, poll
from tests.redis_server import redis_server_process

pytestmark = pytest.mark.slow


def _post(url: str, prompt: str, seed: int, steps: int = 8, **headers: str) -> httpx.Response:
    body = {"inputs": prompt, "parameters": {"num_inference_steps": steps, "seed": seed}}
    return httpx.post(f"{url}/models/{MODEL}", json=body, headers=headers, timeout=120)


def _in_flight(url: str) -> int:
    model = httpx.get(f"{url}/health").json()["engine"]["models"].get(MODEL, {})
    return int(model.get("queued", 0)) + int(model.get("running", 0))


def test_sigterm_answers_every_request_in_flight_then_exits(tmp_path: Path) -> None:
    env = {"IMAGINE_DATA_DIR": str(tmp_path / "data"), "IMAGINE_MAX_BATCH_SIZE": "2"}
    with serve_process(env, tmp_path / "server.log") as (proc, url):
        answers: list[int] = []
        threads = [
            threading.Thread(target=lambda i=i: answers.append(_post(url, "a", i, 24).status_code))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        poll(lambda: _in_flight(url) >= 7 or None, "the requests to be admitted")
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(answers) == [200] * 8
        # uvicorn re-raises the signal once it has shut down: a drained exit reads -15
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "server.log").read_text()


def test_redis_killed_and_restarted_under_the_cache() -> None:
    with redis_server_process() as (redis_url, redis_proc):
        port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        settings = Settings(preload=[MODEL], cache_backend="redis", redis_url=redis_url)
        app = create_app(settings, build_engine(settings), create_cache(settings))
        with serve(app) as url:
            assert _post(url, "a red circle", 1).headers["x-cache"] == "miss"
            assert _post(url, "a red circle", 1).headers["x-cache"] == "hit"
            redis_proc.kill()
            redis_proc.wait()
            down = _post(url, "a red circle", 1)
            assert down.status_code == 200 and down.headers["x-cache"] == "miss"
            assert httpx.get(f"{url}/health").json()["cache"]["state"] != "ok"
            with redis_server_process(port=port):
                # a fresh, empty Redis: once the breaker lets calls through, stores land again
                def cached() -> bool | None:
                    _post(url, "a blue square", 2)
                    return _post(url, "a blue square", 2).headers["x-cache"] == "hit" or None

                poll(cached, "the cache to come back with Redis")
                assert httpx.get(f"{url}/health").json()["cache"]["state"] == "ok"


def test_a_frozen_redis_adds_at_most_its_timeout_then_nothing() -> None:
    with redis_server_process() as (redis_url, redis_proc):
        settings = Settings(preload=[MODEL], cache_backend="redis", redis_url=redis_url)
        app = create_app(settings, build_engine(settings), create_cache(settings))
        with serve(app) as url:

            def timed(seed: int) -> float:  # a fresh seed: a cache miss, one step to run
                started = time.perf_counter()
                r = _post(url, "a red circle", seed, steps=1)
                assert r.status_code == 200 and r.headers["x-cache"] == "miss"
                return time.perf_counter() - started

            for seed in range(3):
                timed(seed)  # warm-up
            healthy = [timed(100 + seed) for seed in range(10)]
            redis_proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers
            try:
                frozen = [timed(200 + seed) for seed in range(10)]
                state = httpx.get(f"{url}/health").json()["cache"]["state"]
            finally:
                redis_proc.send_signal(signal.SIGCONT)
        slowest = max(healthy)
        print(f"healthy {statistics.median(healthy):.3f} s (max {slowest:.3f}); frozen {frozen}")
        paid = [seconds for seconds in frozen if seconds > slowest + 0.1]
        assert all(seconds <= slowest + settings.redis_timeout_s + 0.05 for seconds in frozen)
        assert len(paid) <= 5, "the breaker did not open after a handful of failures"
        assert statistics.median(frozen[5:]) <= statistics.median(healthy) + 0.05
        assert state == "degraded"


def test_a_model_that_fails_to_load_answers_500_and_the_rest_is_served(tmp_path: Path) -> None:
    broken = tmp_path / "models" / "broken" / "sd"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    (broken / "unet" / "config.json").write_text("{ not json")
    settings = Settings(preload=[MODEL], model_dirs=[tmp_path / "models"])
    with serve(create_app(settings, build_engine(settings))) as url:
        failed = httpx.post(
            f"{url}/models/broken/sd",
            json={"inputs": "a cat"},
            headers={"x-wait-for-model": "true"},
            timeout=120,
        )
        assert failed.status_code == 500 and "broken/sd" in failed.json()["error"]
        assert _post(url, "a red circle", 3).status_code == 200
        health = httpx.get(f"{url}/health").json()["engine"]["models"]["broken/sd"]
        assert health["state"] == "failed" and health["error"]


@pytest.fixture(scope="module")
def batching_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL], batch_wait_ms=500.0, max_batch_size=8)
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def _pixels(response: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.int16)


def test_a_poison_prompt_among_eight_fails_alone(batching_url: str) -> None:
    prompts = [f"a red circle number {i}" for i in range(7)] + ["a red \ud800 circle"]
    answers: dict[int, httpx.Response] = {}

    def send(i: int) -> None:
        body = {"inputs": prompts[i], "parameters": {"num_inference_steps": 8, "seed": 100 + i}}
        answers[i] = httpx.post(
            f"{batching_url}/models/{MODEL}",
            content=__import__("json").dumps(body).encode(),  # the lone surrogate as \ud800
            headers={"content-type": "application/json", "x-use-cache": "false"},
            timeout=120,
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers[7].status_code == 400 and "inputs" in answers[7].json()["error"]
    for i in range(7):
        alone = _post(batching_url, prompts[i], 100 + i, **{"x-use-cache": "false"})
        assert answers[i].status_code == 200
        assert np.abs(_pixels(answers[i]) - _pixels(alone)).max() <= 1  # within 1/255
