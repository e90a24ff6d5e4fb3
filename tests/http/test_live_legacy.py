"""Every legacy request shape of protocol.md, sent raw with httpx to a live server (auth off on
loopback, real validation, fake engine)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from imagine.http.app import create_app
from imagine.settings import Settings
from tests.http.fakes import FakeEngine
from tests.http.live import serve


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def client(engine: FakeEngine) -> Iterator[httpx.Client]:
    with (
        serve(create_app(Settings(preload=[]), engine)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


@pytest.fixture(autouse=True)
def _reset(engine: FakeEngine) -> None:
    engine.calls.clear()
    engine.error = None


def test_target_size(client: httpx.Client, engine: FakeEngine) -> None:
    body = {"inputs": "c", "parameters": {"target_size": {"width": 48, "height": 32}}}
    r = client.post("/models/org/model", json=body)
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (48, 32)


def test_negative_prompt_list(client: httpx.Client, engine: FakeEngine) -> None:
    body = {"inputs": "c", "parameters": {"negative_prompt": ["blurry", "low quality"]}}
    assert client.post("/models/org/model", json=body).status_code == 200
    assert engine.calls[0].request.negative_prompt == "blurry, low quality"


def test_integral_float_sizes_and_steps(client: httpx.Client, engine: FakeEngine) -> None:
    params = {"width": 40.0, "height": 24.0, "num_inference_steps": 3.0, "guidance_scale": 2}
    r = client.post("/models/org/model", json={"inputs": "c", "parameters": params})
    assert r.status_code == 200, r.text
    req = engine.calls[0].request
    assert (req.width, req.height, req.num_inference_steps) == (40, 24, 3)
    assert isinstance(req.width, int) and req.guidance_scale == 2.0


def test_non_integral_float_size_is_a_400(client: httpx.Client) -> None:
    r = client.post("/models/org/model", json={"inputs": "c", "parameters": {"width": 40.5}})
    assert r.status_code == 400 and "width" in r.json()["error"]


def test_legacy_options(client: httpx.Client, engine: FakeEngine) -> None:
    body = {"inputs": "c", "options": {"use_cache": False, "wait_for_model": True}}
    assert client.post("/models/org/model", json=body).status_code == 200
    assert engine.calls[0].wait_for_model is True


def test_raw_text_body(client: httpx.Client, engine: FakeEngine) -> None:
    r = client.post("/", content=b"a lighthouse", headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    assert engine.calls[0].request.prompt == "a lighthouse"
    assert engine.calls[0].request.model_id == "imagine/shapes"


def test_pipeline_path_and_python_024_body(client: httpx.Client, engine: FakeEngine) -> None:
    # InferenceApi / Python <= 0.24: no `parameters` key at all
    r = client.post("/pipeline/text-to-image/org/model", json={"inputs": "c"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_unknown_parameters_are_ignored(client: httpx.Client, engine: FakeEngine) -> None:
    body = {"inputs": "c", "parameters": {"seed": 3, "clip_skip": 2, "foo": {"bar": 1}}}
    r = client.post("/models/org/model", json=body)
    assert r.status_code == 200 and r.headers["x-seed"] == "3"


def test_curl_default_form_content_type(client: httpx.Client, engine: FakeEngine) -> None:
    r = client.post(
        "/",
        content=b'{"inputs":"a cube"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and engine.calls[0].request.prompt == "a cube"


def test_422_never_on_the_wire(client: httpx.Client) -> None:
    cases = [
        {"inputs": "c", "parameters": {"width": "big"}},
        {"inputs": "c", "parameters": {"num_inference_steps": -1}},
        {"inputs": "c", "parameters": {"guidance_scale": 1e9}},
        {"parameters": {}},
    ]
    for body in cases:
        r = client.post("/models/org/model", json=body)
        assert r.status_code == 400, (body, r.status_code)
        assert isinstance(r.json()["error"], str)
