"""Routes over the ASGI app with a fake engine: paths, Accept, headers, legacy shapes, cache."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from imagine.cache.memory import MemoryCache
from imagine.imaging import read_parameters
from tests.http.fakes import FakeEngine

BODY = {"inputs": "a red cube", "parameters": {"seed": 7, "width": 32, "height": 48}}


@pytest.mark.parametrize(
    "path",
    ["/models/org/model", "/hf-inference/models/org/model", "/pipeline/text-to-image/org/model"],
)
async def test_post_paths_return_raw_png(
    client: httpx.AsyncClient, engine: FakeEngine, path: str
) -> None:
    r = await client.post(path, json=BODY)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "PNG" and image.size == (32, 48)
    assert r.headers["x-seed"] == "7"
    assert float(r.headers["x-compute-time"]) >= 0
    assert r.headers["x-compute-type"] == "cpu"
    assert r.headers["x-cache"] == "miss"
    assert len(r.headers["x-request-id"]) == 32
    # the fake pipeline reports total=1 ms; the server adds its own encoding time
    stages = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert set(stages) == {"pipeline", "encode"} and float(stages["pipeline"]) == 1.0
    assert engine.calls[0].request.model_id == "org/model"


async def test_post_root_uses_default_model(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    r = await client.post("/", json={"inputs": "x"})
    assert r.status_code == 200
    assert engine.calls[0].request.model_id == "imagine/shapes"


async def test_seed_is_reproducible_and_random_seed_reported(client: httpx.AsyncClient) -> None:
    a = await client.post("/models/org/model", json=BODY)
    b = await client.post("/models/org/model", json=BODY)
    assert a.content == b.content
    r = await client.post("/models/org/model", json={"inputs": "a red cube"})
    seed = int(r.headers["x-seed"])
    again = await client.post(
        "/models/org/model", json={"inputs": "a red cube", "parameters": {"seed": seed}}
    )
    assert again.content == r.content


async def test_parameters_embedded_in_png(client: httpx.AsyncClient) -> None:
    body = {
        "inputs": "a red cube",
        "parameters": {"seed": 3, "negative_prompt": "blurry", "num_inference_steps": 2},
    }
    r = await client.post("/models/org/model", json=body)
    params = read_parameters(r.content)
    assert params is not None
    assert params["prompt"] == "a red cube"
    assert params["negative_prompt"] == "blurry"
    assert params["model_id"] == "org/model"
    assert params["seed"] == 3 and params["num_inference_steps"] == 2
    assert params["scheduler"] == "EulerDiscreteScheduler"
    assert (params["width"], params["height"], params["guidance_scale"]) == (64, 64, 5.0)
    info = Image.open(io.BytesIO(r.content)).info
    assert "a red cube" in info["Comment"] and "seed: 3" in info["Comment"]


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ([("accept", "image/jpeg")], "jpeg"),
        ([("accept", "image/webp")], "webp"),
        ([("accept", "image/png")], "png"),
        # what huggingface_hub sends when the user overrides Accept: theirs first, then its own
        ([("accept", "image/jpeg"), ("Accept", "image/png")], "jpeg"),
        ([("accept", "image/webp;q=0.9, image/png;q=0.1")], "webp"),
        ([("accept", "image/tiff, image/jpeg")], "jpeg"),
        ([("accept", "image/tiff")], "png"),
        ([("accept", "*/*")], "png"),
        ([], "png"),
    ],
)
async def test_accept_negotiation(
    client: httpx.AsyncClient, accept: list[tuple[str, str]], fmt: str
) -> None:
    headers = httpx.Headers(accept)
    if not accept:
        headers["accept"] = ""  # httpx would add */* otherwise; an empty header = nothing
    r = await client.post("/models/org/model", json=BODY, headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == f"image/{fmt}"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == fmt.upper()
    params = read_parameters(r.content)
    assert params is not None and params["seed"] == 7 and params["prompt"] == "a red cube"


@pytest.mark.parametrize("header", ["X-Request-Id", "X-Amzn-Trace-Id"])
async def test_request_id_echoed(client: httpx.AsyncClient, header: str) -> None:
    rid = "Root=1-abc-def" if header == "X-Amzn-Trace-Id" else "req-123"
    r = await client.post("/models/org/model", json=BODY, headers={header: rid})
    assert r.headers["x-request-id"] == rid
    err = await client.post("/models/nope/nope", json=BODY, headers={header: rid})
    assert err.status_code == 404 and err.headers["x-request-id"] == rid


async def test_legacy_shapes_reach_the_validator(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    body = {
        "inputs": "cube",
        "parameters": {
            "target_size": {"width": 40, "height": 24},
            "negative_prompt": ["blurry", "dark"],
            "num_inference_steps": 3.0,
            "seed": 1,
            "some_extra_body_key": {"x": 1},
        },
        "options": {"use_cache": False, "wait_for_model": True},
    }
    r = await client.post("/pipeline/text-to-image/org/model", json=body)
    assert r.status_code == 200, r.text
    call = engine.calls[0]
    req = call.request
    assert (req.width, req.height, req.num_inference_steps) == (40, 24, 3)
    assert req.negative_prompt == "blurry, dark"
    assert call.wait_for_model is True


async def test_raw_text_body_is_the_prompt(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    r = await client.post(
        "/models/org/model", content=b"a plain prompt", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 200
    assert engine.calls[0].request.prompt == "a plain prompt"


async def test_curl_form_content_type_with_json_body(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    r = await client.post(
        "/",
        content=json.dumps({"inputs": "x"}).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert engine.calls[0].request.prompt == "x"


@pytest.mark.parametrize(
    ("headers", "options", "expected"),
    [
        ({}, None, False),
        ({"x-wait-for-model": "true"}, None, True),
        ({"x-wait-for-model": "1"}, None, True),
        ({}, {"wait_for_model": True}, True),
        ({"x-wait-for-model": "false"}, {"wait_for_model": True}, False),
    ],
)
async def test_wait_for_model_flag(
    client: httpx.AsyncClient,
    engine: FakeEngine,
    headers: dict[str, str],
    options: dict[str, bool] | None,
    expected: bool,
) -> None:
    body: dict[str, object] = {"inputs": "x"}
    if options is not None:
        body["options"] = options
    r = await client.post("/models/org/model", json=body, headers=headers)
    assert r.status_code == 200
    assert engine.calls[0].wait_for_model is expected


async def test_result_cache_hit_and_bypass(make_client, engine: FakeEngine) -> None:  # type: ignore[no-untyped-def]
    client = make_client(cache=MemoryCache(max_bytes=10_000_000, ttl_s=60))
    first = await client.post("/models/org/model", json=BODY)
    second = await client.post("/models/org/model", json=BODY)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.content == first.content and second.headers["x-seed"] == "7"
    assert len(engine.calls) == 1
    jpeg = await client.post("/models/org/model", json=BODY, headers={"accept": "image/jpeg"})
    assert jpeg.headers["x-cache"] == "miss" and jpeg.headers["content-type"] == "image/jpeg"
    bypass = await client.post("/models/org/model", json=BODY, headers={"x-use-cache": "false"})
    assert bypass.headers["x-cache"] == "miss"
    legacy = await client.post("/models/org/model", json={**BODY, "options": {"use_cache": False}})
    assert legacy.headers["x-cache"] == "miss"
    assert len(engine.calls) == 4


async def test_get_status_health_and_info(client: httpx.AsyncClient) -> None:
    for path in ("/", "/models/org/model", "/hf-inference/models/org/model"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.json()["state"] == "ready" and r.json()["task"] == "text-to-image"
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = (await client.get("/models/org/model/info")).json()
    assert info["model_id"] == "org/model" and info["family"] == "fake"
    assert info["defaults"]["num_inference_steps"] == 4
    assert info["schedulers"] == ["EulerDiscreteScheduler", "DDIMScheduler"]
    assert info["sigma_options"] == {"EulerDiscreteScheduler": ["karras", "exponential"]}
    assert info["limits"]["size_multiple"] == 8
    assert info["extras"] == {"true_cfg_scale": [1.0, 10.0]}


async def test_client_id_is_peer_address_without_auth(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    await client.post("/models/org/model", json=BODY, headers={"authorization": "Bearer hf_x"})
    assert engine.calls[0].client_id == "127.0.0.1"
