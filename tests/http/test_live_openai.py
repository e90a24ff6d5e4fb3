"""The OpenAI Images API against a live server (uvicorn + the real engine on imagine/shapes),
driven by the official `openai` client, LangChain's DallEAPIWrapper and Open WebUI's exact
requests for its "openai" image engine."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from langchain_community.utilities.dalle_image_generator import DallEAPIWrapper
from PIL import Image

from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.imaging import read_parameters
from imagine.settings import Settings
from tests.http.live import serve
from tests.jobs.live import MODEL, poll

pytestmark = pytest.mark.slow

TOKEN = "openai-test-token"


def _settings(**overrides: object) -> Settings:
    return Settings(**{"preload": [MODEL], "max_steps": 400, **overrides})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = _settings()
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="anything", base_url=f"{base_url}/v1", max_retries=0)


def _decode(b64: str) -> bytes:
    return base64.b64decode(b64, validate=True)


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_b64_json_and_url_give_the_same_image(client: openai.OpenAI) -> None:
    prompt = "a blue square in the middle"
    inline = client.images.generate(
        model="dall-e-2",
        prompt=prompt,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 5},
    )
    assert inline.size == "64x64" and inline.output_format == "png"
    png = _decode(inline.data[0].b64_json)
    assert _size(png) == (64, 64)

    by_url = client.images.generate(
        model="dall-e-2", prompt=prompt, size="64x64", extra_body={"seed": 5}
    )
    url = by_url.data[0].url
    assert url.startswith("http://127.0.0.1:") and by_url.data[0].b64_json is None
    downloaded = httpx.get(url)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "image/png"
    assert (
        Image.open(io.BytesIO(downloaded.content)).tobytes()
        == Image.open(io.BytesIO(png)).tobytes()
    )


def test_n_gives_different_images_with_consecutive_seeds(client: openai.OpenAI) -> None:
    result = client.images.generate(
        prompt="a red circle",
        n=3,
        size="64x64",
        response_format="b64_json",
        extra_body={"num_inference_steps": 6},
    )
    images = [_decode(item.b64_json) for item in result.data]
    seeds = [read_parameters(data)["seed"] for data in images]  # type: ignore[index]
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2]
    assert len({Image.open(io.BytesIO(d)).tobytes() for d in images}) == 3


def test_menu_sizes_are_an_aspect_ratio_at_the_models_size_and_quality_sets_steps(
    client: openai.OpenAI,
) -> None:
    square = client.images.generate(
        prompt="a cat", size="1024x1024", quality="low", response_format="b64_json"
    )
    wide = client.images.generate(
        prompt="a cat", size="1792x1024", quality="high", response_format="b64_json"
    )
    low = read_parameters(_decode(square.data[0].b64_json))
    high = read_parameters(_decode(wide.data[0].b64_json))
    assert square.size == "64x64" and (low["width"], low["height"]) == (64, 64)  # type: ignore
    width, height = (int(v) for v in wide.size.split("x"))
    assert width > height and width % 8 == 0 and height % 8 == 0
    assert low["num_inference_steps"] < high["num_inference_steps"]  # type: ignore[index]


def test_output_format_and_compression(client: openai.OpenAI) -> None:
    kwargs = {
        "prompt": "a cat",
        "size": "64x64",
        "response_format": "b64_json",
        "output_format": "jpeg",
        "extra_body": {"seed": 3, "num_inference_steps": 4},
    }
    small = _decode(client.images.generate(output_compression=10, **kwargs).data[0].b64_json)
    large = _decode(client.images.generate(output_compression=95, **kwargs).data[0].b64_json)
    assert Image.open(io.BytesIO(small)).format == "JPEG"
    assert len(small) < len(large)


def test_stream_yields_partial_images_then_one_completed_last(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        prompt="a green triangle",
        size="64x64",
        stream=True,
        partial_images=2,
        extra_body={"num_inference_steps": 60, "seed": 1},
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-1] == "image_generation.completed" and kinds.count(kinds[-1]) == 1
    partials = [e for e in events if e.type == "image_generation.partial_image"]
    assert 1 <= len(partials) <= 2
    assert [p.partial_image_index for p in partials] == list(range(len(partials)))
    assert _size(_decode(partials[0].b64_json)) == (64, 64)
    final = _decode(events[-1].b64_json)
    assert read_parameters(final)["num_inference_steps"] == 60  # type: ignore[index]


def test_errors_are_openai_errors_naming_the_field(client: openai.OpenAI, base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="a cat", size="100x7")
    assert bad.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="a cat", size="banana")
    assert bad.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="a cat", background="transparent")
    assert bad.value.body["param"] == "background"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(prompt="a cat", model="nobody/no-such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    raw = httpx.post(f"{base_url}/v1/images/generations", json={"prompt": "", "n": 1})
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert raw.json()["error"]["param"] == "prompt"


def test_langchain_dalle_wrapper_returns_a_url_that_downloads(base_url: str) -> None:
    wrapper = DallEAPIWrapper(api_key="anything", base_url=f"{base_url}/v1")
    url = wrapper.run("a yellow circle")
    image = httpx.get(url)
    assert image.status_code == 200 and _size(image.content) == (64, 64)


def test_open_webui_openai_engine_requests(base_url: str) -> None:
    headers = {"Authorization": "Bearer sk-whatever"}
    r = httpx.post(
        f"{base_url}/v1/images/generations",
        json={
            "model": "dall-e-2",
            "prompt": "a cat",
            "n": 1,
            "size": "512x512",
            "response_format": "b64_json",
        },
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert _size(_decode(r.json()["data"][0]["b64_json"])) == (64, 64)
    # for gpt-image models it sends no response_format, then fetches the URL with its header
    r = httpx.post(
        f"{base_url}/v1/images/generations",
        json={"model": "gpt-image-1", "prompt": "a cat", "n": 1, "size": "512x512"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert httpx.get(r.json()["data"][0]["url"], headers=headers).status_code == 200


def test_models_lists_the_aliases_and_the_default(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", MODEL} <= ids


def test_auth_on_and_urls_need_no_token() -> None:
    settings = _settings(tokens=[TOKEN])
    with serve(create_app(settings, build_engine(settings))) as url:
        wrong = openai.OpenAI(api_key="wrong", base_url=f"{url}/v1", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.images.generate(prompt="a cat", size="64x64")
        right = openai.OpenAI(api_key=TOKEN, base_url=f"{url}/v1", max_retries=0)
        result = right.images.generate(prompt="a cat", size="64x64")
        assert httpx.get(result.data[0].url).status_code == 200  # no token: the id is the key


def test_a_429_is_retried_after_retry_after() -> None:
    # One request at a time and one queued: the third is refused (with more, step-level
    # batching would let the queued ones join the running one).
    settings = _settings(queue_size=1, batch_wait_ms=0.0, max_batch_size=1)
    with serve(create_app(settings, build_engine(settings))) as url:
        create = f"{url}/v1/models/{MODEL}/predictions"
        long = httpx.post(create, json={"input": {"prompt": "a", "num_inference_steps": 80}})
        poll(
            lambda: httpx.get(long.json()["urls"]["get"]).json()["status"] == "processing" or None,
            "the long job to start",
        )
        queued = httpx.post(create, json={"input": {"prompt": "b", "num_inference_steps": 4}})
        assert queued.status_code == 201
        seen: list[int] = []
        http = httpx.Client(event_hooks={"response": [lambda r: seen.append(r.status_code)]})
        client = openai.OpenAI(api_key="x", base_url=f"{url}/v1", max_retries=4, http_client=http)
        result = client.images.generate(
            prompt="c",
            size="64x64",
            response_format="b64_json",
            extra_body={"num_inference_steps": 4},
        )
        assert _size(_decode(result.data[0].b64_json)) == (64, 64)
        assert seen[0] == 429 and seen[-1] == 200
