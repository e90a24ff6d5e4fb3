"""Two `imagine serve` processes sharing one real Redis: a miss in one is a hit in the other.

The second server answers from the cache without loading the model at all. Readiness is each
server's own "Uvicorn running on" log line, never a sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests.redis_server import free_port, redis_server

pytestmark = pytest.mark.slow

MODEL = "tiny/sd"


@contextmanager
def imagine_server(env: dict[str, str], *, ready_timeout_s: float = 120.0) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from imagine.cli import main; sys.exit(main())",
            "serve",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(ready_timeout_s) or proc.poll() is not None:
            raise RuntimeError("imagine serve did not start:\n" + "".join(log[-40:]))
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_servers_share_the_redis_cache(tiny_model_root: Path) -> None:
    with redis_server() as redis_url:
        env = {
            **os.environ,
            "IMAGINE_MODEL_DIRS": json.dumps([str(tiny_model_root)]),
            "IMAGINE_PRELOAD": "[]",
            "IMAGINE_DEFAULT_MODEL": MODEL,
            "IMAGINE_ALLOW_DOWNLOADS": "false",
            "IMAGINE_CACHE_BACKEND": "redis",
            "IMAGINE_REDIS_URL": redis_url,
            "IMAGINE_LOG_LEVEL": "info",
        }
        body = {
            "inputs": "a blue square",
            "parameters": {"width": 64, "height": 64, "num_inference_steps": 2, "seed": 7},
        }
        with (
            imagine_server(env) as one,
            imagine_server(env) as two,
            httpx.Client(timeout=300) as client,
        ):
            url = f"/models/{MODEL}"
            first = client.post(one + url, json=body, headers={"x-wait-for-model": "true"})
            assert first.status_code == 200, first.text
            assert first.headers["x-cache"] == "miss"
            # the store runs in the background, off the response path: wait until it landed
            raw = redis.Redis.from_url(redis_url)
            deadline = time.monotonic() + 30
            while not raw.keys("imagine:result:*"):
                assert time.monotonic() < deadline, "the first server never stored its image"
                time.sleep(0.01)
            raw.close()
            second = client.post(two + url, json=body)  # not waiting: only a hit can be 200
            assert second.status_code == 200, second.text
            assert second.headers["x-cache"] == "hit"
            assert second.content == first.content
            assert second.headers["content-type"] == first.headers["content-type"]
            health = client.get(two + "/health").json()
            assert MODEL not in health["engine"]["models"]  # never loaded: the hit came from Redis
