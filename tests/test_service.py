"""The service layer's seed-less cache semantics, seen through the real huggingface_hub
InferenceClient against a live server on imagine/shapes: with the cache on, an identical
request that names no seed gets the first one's image; `x-use-cache: false` gets a fresh seed."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import InferenceClient
from PIL import Image

from imagine.cache import create_cache
from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.live import serve

MODEL = "imagine/shapes"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = Settings(preload=[MODEL], batch_wait_ms=0.0)
    with serve(create_app(settings, build_engine(settings), create_cache(settings))) as url:
        yield url


def _bytes(image: Image.Image) -> bytes:
    return image.tobytes()


def test_a_seedless_repeat_gets_the_first_image_unless_the_cache_is_off(base_url: str) -> None:
    client = InferenceClient(model=f"{base_url}/models/{MODEL}")
    first = client.text_to_image("a green triangle at the top")
    again = client.text_to_image("a green triangle at the top")
    assert _bytes(again) == _bytes(first)

    fresh = InferenceClient(model=f"{base_url}/models/{MODEL}", headers={"x-use-cache": "false"})
    other = fresh.text_to_image("a green triangle at the top")
    assert _bytes(other) != _bytes(first)
    # a different prompt is a different seed-less request
    assert _bytes(client.text_to_image("a green triangle at the bottom")) != _bytes(first)


def test_the_repeat_reports_the_first_seed_and_a_seeded_request_is_not_aliased(
    base_url: str,
) -> None:
    body = {"inputs": "a yellow circle", "parameters": {"num_inference_steps": 4}}
    url = f"{base_url}/models/{MODEL}"
    first = httpx.post(url, json=body, timeout=60)
    again = httpx.post(url, json=body, timeout=60)
    assert first.status_code == again.status_code == 200
    assert again.headers["x-seed"] == first.headers["x-seed"]
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    fresh = httpx.post(url, json=body, headers={"x-use-cache": "false"}, timeout=60)
    assert fresh.headers["x-seed"] != first.headers["x-seed"]
    # naming another seed runs that seed, whatever the seed-less alias says
    seed = (int(first.headers["x-seed"]) + 1) % 2**63
    seeded = httpx.post(url, json={**body, "parameters": {**body["parameters"], "seed": seed}})
    assert seeded.headers["x-seed"] == str(seed)
    assert (
        Image.open(io.BytesIO(seeded.content)).tobytes()
        != Image.open(io.BytesIO(first.content)).tobytes()
    )
