"""The whole stack, live: uvicorn + the real Engine and ModelManager serving the tiny SD 1.x
pipeline by id, driven by huggingface_hub and raw httpx."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import InferenceClient
from PIL import Image

from imagine.cli import build_cache, build_engine
from imagine.http.app import create_app
from imagine.imaging import read_parameters
from imagine.settings import Settings
from tests.http.live import serve

pytestmark = pytest.mark.slow

MODEL = "tiny/sd"
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def base_url(tiny_model_root: Path) -> Iterator[str]:
    settings = Settings(
        model_dirs=[tiny_model_root],
        preload=[],  # not preloaded: the first request sees the model loading
        default_model=MODEL,
        device="cpu",
        dtype="float32",
        allow_downloads=False,
    )
    app = create_app(settings, build_engine(settings), build_cache(settings))
    with serve(app) as url:
        yield url


def test_loading_then_waiting_then_reproducible(base_url: str) -> None:
    url = f"{base_url}/models/{MODEL}"
    with httpx.Client(timeout=300) as client:
        first = client.post(url, json={"inputs": "a red cube", "parameters": {**SMALL, "seed": 1}})
        # not preloaded and not waiting: the 503 body (and the load starts in the background)
        assert first.status_code == 503, first.text
        body = first.json()
        assert set(body) == {"error", "estimated_time"}
        assert body["error"] == f"Model {MODEL} is currently loading"
        assert isinstance(body["estimated_time"], float)
        first = client.post(
            url,
            json={"inputs": "a red cube", "parameters": {**SMALL, "seed": 1}},
            headers={"x-wait-for-model": "true"},
        )
        assert first.status_code == 200, first.text
        assert first.headers["x-seed"] == "1" and first.headers["x-compute-type"] == "cpu"
        fresh = client.post(
            url,
            json={"inputs": "a red cube", "parameters": {**SMALL, "seed": 1}},
            headers={"x-use-cache": "false"},
        )
        assert fresh.headers["x-cache"] == "miss"
        assert fresh.content == first.content  # bit-identical without the cache
        stages = dict(p.split(";dur=") for p in fresh.headers["server-timing"].split(", "))
        assert list(stages) == ["queue", "text", "denoise", "decode", "pipeline", "encode"]
        # the stages lie inside the pipeline call, which lies inside the request
        inner = sum(float(stages[k]) for k in ("text", "denoise", "decode"))
        assert 0 < inner <= float(stages["pipeline"]) + 0.3
        assert float(stages["pipeline"]) <= 1000 * float(fresh.headers["x-compute-time"])
        cached = client.post(url, json={"inputs": "a red cube", "parameters": {**SMALL, "seed": 1}})
        assert cached.headers["x-cache"] == "hit" and cached.content == first.content
        other = client.post(url, json={"inputs": "a red cube", "parameters": {**SMALL, "seed": 2}})
        assert other.content != first.content
        params = read_parameters(first.content)
        assert params is not None
        assert (params["model_id"], params["seed"], params["num_inference_steps"]) == (MODEL, 1, 2)


def test_python_client_random_seed_is_reported_and_reproducible(base_url: str) -> None:
    raw = httpx.post(
        f"{base_url}/",
        json={"inputs": "a blue ball", "parameters": SMALL},
        headers={"x-wait-for-model": "1"},
        timeout=300,
    )
    assert raw.status_code == 200, raw.text
    seed = int(raw.headers["x-seed"])
    client = InferenceClient(model=f"{base_url}/hf-inference/models/{MODEL}", timeout=300)
    image = client.text_to_image("a blue ball", seed=seed, **SMALL)  # type: ignore[arg-type]
    assert image.tobytes() == Image.open(io.BytesIO(raw.content)).tobytes()


def test_real_validation_errors(base_url: str) -> None:
    url = f"{base_url}/models/{MODEL}"
    bad = httpx.post(url, json={"inputs": "x", "parameters": {"scheduler": "Nope"}}, timeout=60)
    assert bad.status_code == 400
    assert "scheduler" in bad.json()["error"] and "EulerDiscreteScheduler" in bad.json()["error"]
    size = httpx.post(url, json={"inputs": "x", "parameters": {"width": 65}}, timeout=60)
    assert size.status_code == 400 and "width" in size.json()["error"]
    missing = httpx.post(f"{base_url}/models/tiny/absent", json={"inputs": "x"}, timeout=60)
    assert missing.status_code == 404 and list(missing.json()) == ["error"]
    info = httpx.get(f"{url}/info", timeout=60).json()
    assert info["family"] == "sd" and "EulerDiscreteScheduler" in info["schedulers"]


def test_js_client_on_the_real_model(base_url: str, tmp_path: Path) -> None:
    import shutil

    from tests.http.test_live_js import JS_DIR, run_js

    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (JS_DIR / "node_modules" / "@huggingface" / "inference").is_dir():
        pytest.fail("tests/js/node_modules missing: run `bash scripts/test-deps.sh`")
    out = tmp_path / "js.png"
    result = run_js(
        f"{base_url}/models/{MODEL}",
        out,
        {"inputs": "a red cube", "parameters": {**SMALL, "seed": 1}},
    )
    assert result["ok"], result
    reference = httpx.post(
        f"{base_url}/models/{MODEL}",
        json={"inputs": "a red cube", "parameters": {**SMALL, "seed": 1}},
        headers={"x-wait-for-model": "true"},
        timeout=300,
    )
    assert Image.open(out).tobytes() == Image.open(io.BytesIO(reference.content)).tobytes()
