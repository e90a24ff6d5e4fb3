"""Fair cost control on a live server with the defaults (imagine/engine/cost.py): the model's
rate is measured when it loads; a request predicted past max_request_s is a 400 naming the
limit; while the largest allowed request runs, a small one is answered within 30 s; work that
would wait past the request timeout is refused at once with a 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from imagine.cli import build_engine
from imagine.engine.cost import SizeCost, WorkRate
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.engine.fake_manager import make_request
from tests.http.live import serve
from tests.jobs.live import MODEL, poll

pytestmark = pytest.mark.slow

SMALL = {"inputs": "a red circle", "parameters": {"num_inference_steps": 4, "seed": 1}}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL])  # the defaults: max_request_s = 15
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def _rate(base_url: str) -> WorkRate:
    """The server's cost model of the model, as /health shows it."""
    cost = httpx.get(f"{base_url}/health").json()["engine"]["models"][MODEL]["cost"]
    assert cost is not None, "the model was not calibrated at load"
    rate = WorkRate()
    rate.calibrate([SizeCost(**size) for size in cost["sizes"]])
    rate.scale = cost["scale"]
    return rate


def _steps_within(base_url: str, seconds: float, size: int) -> int:
    """The most steps at size×size the server predicts to take at most `seconds`."""
    rate = _rate(base_url)
    one = rate.units(make_request(width=size, height=size, steps=1))
    per_step = rate.units(make_request(width=size, height=size, steps=2)) - one
    return int((seconds / rate.seconds(1.0) - one) / per_step) + 1


def test_a_request_predicted_past_the_limit_is_a_400_naming_it() -> None:
    # imagine/shapes draws every size at 64x64, so at the default 15 s none of its requests
    # is too long: a 1 s limit, and its largest request (100 steps, about 3 s here)
    settings = Settings(preload=[MODEL], max_request_s=1.0)
    with serve(create_app(settings, build_engine(settings))) as url:
        r = httpx.post(
            f"{url}/models/{MODEL}",
            json={
                "inputs": "a cat",
                "parameters": {"width": 1024, "height": 1024, "num_inference_steps": 100},
            },
        )
        assert r.status_code == 400
        assert "max_request_s" in r.json()["error"] and "1 s" in r.json()["error"]
        small = httpx.post(f"{url}/models/{MODEL}", json=SMALL, timeout=60)
        assert small.status_code == 200  # within the limit: served


def test_a_small_request_is_answered_within_30_s_while_the_largest_allowed_runs(
    base_url: str,
) -> None:
    limit = Settings().max_request_s
    # The largest size: its cost is the most the defaults allow (for imagine/shapes, which draws
    # at 64x64 whatever the size, that is max_steps; for a model whose cost grows with the
    # pixels, the most steps predicted within the limit).
    size = 1024
    steps = min(Settings().max_steps, _steps_within(base_url, limit * 0.95, size))
    assert steps >= 1
    big = {
        "inputs": "a blue square",
        "parameters": {"width": size, "height": size, "num_inference_steps": steps, "seed": 2},
    }
    outcome: dict[str, int] = {}

    def run_big() -> None:
        outcome["big"] = httpx.post(f"{base_url}/models/{MODEL}", json=big, timeout=120).status_code

    worker = threading.Thread(target=run_big)
    worker.start()
    poll(
        lambda: (
            httpx.get(f"{base_url}/health").json()["engine"]["models"][MODEL]["running"] or None
        ),
        "the large request to start",
    )
    started = time.monotonic()
    small = httpx.post(f"{base_url}/models/{MODEL}", json=SMALL, timeout=60)
    waited = time.monotonic() - started
    worker.join()
    assert small.status_code == 200 and outcome["big"] == 200
    print(f"large: {size}x{size} x {steps} steps; small answered after {waited:.1f} s")
    assert waited <= 30.0


def test_work_past_the_request_timeout_is_refused_at_once() -> None:
    settings = Settings(preload=[MODEL], request_timeout_s=3.0, batch_wait_ms=0.0)
    with serve(create_app(settings, build_engine(settings))) as url:
        steps = max(2, _steps_within(url, 2.0, 64))  # ~2 s each
        create = f"{url}/v1/models/{MODEL}/predictions"
        first = httpx.post(create, json={"input": {"prompt": "a", "num_inference_steps": steps}})
        assert first.status_code == 201
        refused = None
        for i in range(4):  # 2 s of work each: the third or so passes the 3 s timeout
            r = httpx.post(
                create, json={"input": {"prompt": f"b{i}", "num_inference_steps": steps}}
            )
            if r.status_code == 429:
                refused = r
                break
        assert refused is not None, "queued work past the timeout was admitted"
        assert "request timeout" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 300
