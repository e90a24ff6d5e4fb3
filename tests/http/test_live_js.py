"""The real @huggingface/inference (4.x, pinned in tests/js/package.json) under node."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagine.http.app import create_app
from imagine.imaging import read_parameters
from imagine.settings import Settings, hash_token
from tests.http.fakes import FakeEngine
from tests.http.live import serve

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "text_to_image.mjs"
TOKEN = "js-test-token"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.fixture(scope="module", autouse=True)
def _js_deps() -> None:
    if not (JS_DIR / "node_modules" / "@huggingface" / "inference").is_dir():
        pytest.fail(
            "tests/js/node_modules missing: run `bash scripts/test-deps.sh` (make test does)"
        )


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def base_url(engine: FakeEngine) -> Iterator[str]:
    settings = Settings(preload=[], token_hashes=[hash_token(TOKEN)])
    with serve(create_app(settings, engine)) as url:
        yield url


def run_js(endpoint: str, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", str(SCRIPT), endpoint, str(out), json.dumps(args)],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_js_client_text_to_image(base_url: str, engine: FakeEngine, tmp_path: Path) -> None:
    out = tmp_path / "js.img"
    params = {"width": 32, "height": 40, "seed": 4, "negative_prompt": "dark"}
    result = run_js(
        f"{base_url}/models/org/model",
        out,
        {"inputs": "a red cube", "parameters": params, "accessToken": TOKEN},
    )
    assert result["ok"], result
    # fetch sends `Accept: */*`: our default is PNG
    assert result["type"] == "image/png"
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (32, 40)
    embedded = read_parameters(out.read_bytes())
    assert embedded is not None and embedded["seed"] == 4 and embedded["negative_prompt"] == "dark"
    call = engine.calls[-1]
    assert call.request.prompt == "a red cube" and call.client_id == hash_token(TOKEN)


def test_js_client_without_parameters(base_url: str, engine: FakeEngine, tmp_path: Path) -> None:
    result = run_js(
        f"{base_url}/hf-inference/models/org/model",
        tmp_path / "x",
        {"inputs": "a cube", "accessToken": TOKEN},
    )
    assert result["ok"], result
    assert engine.calls[-1].request.width == 64  # the model default


def test_js_client_sees_error_strings(base_url: str, tmp_path: Path) -> None:
    bad = run_js(
        f"{base_url}/models/org/model",
        tmp_path / "x",
        {"inputs": "a cube", "parameters": {"scheduler": "Nope"}, "accessToken": TOKEN},
    )
    assert not bad["ok"] and "scheduler" in bad["message"]
    unauthorized = run_js(
        f"{base_url}/models/org/model", tmp_path / "x", {"inputs": "a cube", "accessToken": "no"}
    )
    assert not unauthorized["ok"] and "invalid bearer token" in unauthorized["message"]
