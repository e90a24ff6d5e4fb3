"""The real huggingface_hub InferenceClient (sync and async) against a live server."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from imagine.http.app import create_app
from imagine.imaging import read_parameters
from imagine.settings import Settings, hash_token
from tests.http.fakes import FakeEngine
from tests.http.live import serve

TOKEN = "live-test-token"


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def base_url(engine: FakeEngine) -> Iterator[str]:
    settings = Settings(preload=[], token_hashes=[hash_token(TOKEN)])
    with serve(create_app(settings, engine)) as url:
        yield url


@pytest.fixture(autouse=True)
def _reset(engine: FakeEngine) -> None:
    engine.calls.clear()
    engine.error = None


def _png(image) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "path",
    ["/models/org/model", "/hf-inference/models/org/model", "/pipeline/text-to-image/org/model"],
)
def test_sync_client(base_url: str, engine: FakeEngine, path: str) -> None:
    client = InferenceClient(model=base_url + path, token=TOKEN)
    image = client.text_to_image(
        "a red cube",
        negative_prompt="blurry",
        width=32,
        height=48,
        num_inference_steps=3,
        guidance_scale=6.0,
        scheduler="DDIMScheduler",
        seed=11,
    )
    assert image.format == "PNG" and image.size == (32, 48)
    req = engine.calls[0].request
    assert (req.prompt, req.negative_prompt, req.seed) == ("a red cube", "blurry", 11)
    assert (req.num_inference_steps, req.guidance_scale, req.scheduler) == (3, 6.0, "DDIMScheduler")
    assert engine.calls[0].client_id == hash_token(TOKEN)
    again = client.text_to_image(
        "a red cube",
        width=32,
        height=48,
        seed=11,
        negative_prompt="blurry",
        num_inference_steps=3,
        guidance_scale=6.0,
        scheduler="DDIMScheduler",
    )
    assert _png(again) == _png(image)


def test_sync_client_user_accept_header_wins(base_url: str) -> None:
    # The client adds its own `Accept: image/png` after the user's header: both arrive.
    client = InferenceClient(
        model=base_url + "/models/org/model", token=TOKEN, headers={"accept": "image/jpeg"}
    )
    image = client.text_to_image("a cube", seed=1)
    assert image.format == "JPEG"


def test_sync_client_extra_body_is_ignored(base_url: str, engine: FakeEngine) -> None:
    client = InferenceClient(model=base_url + "/models/org/model", token=TOKEN)
    image = client.text_to_image("a cube", seed=2, extra_body={"not_a_knob": 1})
    assert image.size == (64, 64)


def test_sync_client_errors(base_url: str, engine: FakeEngine) -> None:
    client = InferenceClient(model=base_url + "/models/org/model", token=TOKEN)
    with pytest.raises(HfHubHTTPError) as bad:
        client.text_to_image("a cube", scheduler="NoSuchScheduler")
    assert bad.value.response.status_code == 400
    assert "scheduler" in str(bad.value)
    wrong = InferenceClient(model=base_url + "/models/org/model", token="not-it")
    with pytest.raises(HfHubHTTPError) as unauthorized:
        wrong.text_to_image("a cube")
    assert unauthorized.value.response.status_code == 401
    missing = InferenceClient(model=base_url + "/models/no/such", token=TOKEN)
    with pytest.raises(HfHubHTTPError) as not_found:
        missing.text_to_image("a cube")
    assert not_found.value.response.status_code == 404


async def test_async_client(base_url: str, engine: FakeEngine) -> None:
    client = AsyncInferenceClient(model=base_url + "/models/org/model", token=TOKEN)
    try:
        image = await client.text_to_image("a red cube", width=40, height=24, seed=5)
        assert image.format == "PNG" and image.size == (40, 24)
        jpeg_client = AsyncInferenceClient(
            model=base_url + "/models/org/model", token=TOKEN, headers={"accept": "image/jpeg"}
        )
        jpeg = await jpeg_client.text_to_image("a red cube", width=40, height=24, seed=5)
        assert jpeg.format == "JPEG"
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            await close()
    assert engine.calls[0].request.seed == 5


def test_raw_png_carries_parameters(base_url: str) -> None:
    import httpx

    r = httpx.post(
        base_url + "/models/org/model",
        json={"inputs": "a cube", "parameters": {"seed": 9}},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    params = read_parameters(r.content)
    assert params is not None and params["seed"] == 9 and params["model_id"] == "org/model"
