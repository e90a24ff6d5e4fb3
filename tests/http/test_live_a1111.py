"""The A1111 API against live servers (uvicorn + the real engine), driven by the real `webuiapi`
client and by Open WebUI's exact automatic1111 requests (replayed with aiohttp, as it sends
them): txt2img with info, seeds, samplers, model switching per caller, errors naming the field,
Basic auth, and progress/interrupt scoped to the caller.

Models: the embedded imagine/shapes (64x64) and a tiny random SD pipeline built here whose VAE
downscales 8x and whose UNet has no attention, so Open WebUI's 512x512 x 50 steps takes ~1 s
(the shared tiny SD fixture downscales 2x: 18 s a step at 512x512 on this CPU).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import webuiapi
from PIL import Image

from imagine.cache import create_cache
from imagine.cli import build_engine
from imagine.http.app import create_app
from imagine.http.routes_a1111 import Callers
from imagine.settings import Settings
from tests.http.live import serve
from tests.jobs.live import MODEL, poll

pytestmark = pytest.mark.slow

SD = "tiny/sd512"
LONG = 400  # steps: ~25 s on shapes if nothing stopped it
TOKEN_A, TOKEN_B = "a1111-token-a", "a1111-token-b"
SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD pipeline that is cheap at 512x512 (see the module docstring)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from tests.fixtures.tiny_pipelines import _clip_config, _clip_tokenizer, _sd_vae

    torch.manual_seed(0)
    tok = _clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    root = tmp_path_factory.mktemp("a1111_models")
    StableDiffusionPipeline(
        unet=unet,
        scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1),
        vae=_sd_vae((8, 8, 8, 8), mid_block_add_attention=False),
        text_encoder=CLIPTextModel(_clip_config(tok)),
        tokenizer=tok,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(root / SD)
    return root


@pytest.fixture(scope="module")
def base_url(model_root: Path) -> Iterator[str]:
    """Tokens off, the memory cache on, shapes (the default) and the tiny SD preloaded."""
    settings = Settings(preload=[MODEL, SD], model_dirs=[model_root], batch_wait_ms=0.0)
    with serve(create_app(settings, build_engine(settings), create_cache(settings))) as url:
        yield url


@pytest.fixture(scope="module")
def tokens_url(model_root: Path) -> Iterator[str]:
    settings = Settings(
        preload=[MODEL],
        model_dirs=[model_root],
        tokens=[TOKEN_A, TOKEN_B],
        max_steps=LONG,
        max_request_s=0,  # no cost limit: the long run is meant to be interrupted
        batch_wait_ms=0.0,
    )
    with serve(create_app(settings, build_engine(settings))) as url:
        yield url


def _api(url: str, token: str | None = None) -> webuiapi.WebUIApi:
    port = int(url.rsplit(":", 1)[1])
    if token is None:
        return webuiapi.WebUIApi(host="127.0.0.1", port=port)
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, username="me", password=token)


@pytest.fixture
def api(base_url: str) -> Iterator[webuiapi.WebUIApi]:
    client = _api(base_url)
    client.set_options({"sd_model_checkpoint": MODEL})  # every caller here is 127.0.0.1
    yield client


def _png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    assert image.format == "PNG"
    return image


def _post(url: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    # json.dumps escapes lone surrogates ("\ud800"), which httpx's json= cannot encode
    content = json.dumps(body)
    headers = {"content-type": "application/json"}
    return httpx.post(
        f"{url}/sdapi/v1/txt2img", content=content, headers=headers, timeout=120, **kwargs
    )


# --- webuiapi


def test_txt2img_gives_pngs_of_the_size_asked_and_info_with_consecutive_seeds(
    api: webuiapi.WebUIApi,
) -> None:
    result = api.txt2img(prompt="a red circle", seed=1234, batch_size=2, n_iter=2, **SMALL)
    assert len(result.images) == 4
    assert all((i.format, i.size) == ("PNG", (64, 64)) for i in result.images)
    info = result.info  # webuiapi parsed the JSON string
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert len(info["infotexts"]) == 4 and "Seed: 1236" in info["infotexts"][2]
    assert info["infotexts"][0].startswith("a red circle\n")
    assert info["sampler_name"] == "Euler a"  # webuiapi's default sampler
    assert info["sd_model_name"] == MODEL and (info["width"], info["steps"]) == (64, 3)
    assert result.parameters["prompt"] == "a red circle" and result.parameters["batch_size"] == 2
    assert result.images[0].tobytes() != result.images[1].tobytes()


def test_random_seeds_differ_and_a_fixed_seed_is_reproducible(api: webuiapi.WebUIApi) -> None:
    one = api.txt2img(prompt="a blue square", seed=-1, **SMALL)
    two = api.txt2img(prompt="a blue square", seed=-1, **SMALL)
    assert one.info["seed"] != two.info["seed"]
    assert one.images[0].tobytes() != two.images[0].tobytes()
    batch = api.txt2img(prompt="a blue square", seed=77, batch_size=2, **SMALL)
    alone = api.txt2img(prompt="a blue square", seed=78, **SMALL)
    assert alone.info["all_seeds"] == [78] and batch.info["all_seeds"] == [77, 78]
    assert alone.images[0].tobytes() == batch.images[1].tobytes()


def test_samplers_and_schedulers_are_listed_and_each_listed_sampler_runs(
    api: webuiapi.WebUIApi,
) -> None:
    names = api.util_get_sampler_names()
    assert {"Euler a", "Euler", "DPM++ 2M", "DPM++ SDE", "DDIM", "UniPC", "LCM"} <= set(names)
    assert {"automatic", "karras"} <= set(api.util_get_scheduler_names())
    for listed in api.get_samplers():
        name = listed["name"]
        result = api.txt2img(prompt="a circle", sampler_name=name, seed=3, **SMALL)
        assert len(result.images) == 1, name
        schedule = listed["options"].get("scheduler", "automatic").title()
        assert (result.info["sampler_name"], result.info["scheduler"]) == (
            name.removesuffix(" Karras"),
            schedule,
        )


def test_sigma_options_through_names_and_the_scheduler_field(api: webuiapi.WebUIApi) -> None:
    named = api.txt2img(prompt="a circle", sampler_name="DPM++ 2M Karras", seed=3, **SMALL)
    field = api.txt2img(
        prompt="a circle", sampler_name="DPM++ 2M", scheduler="Karras", seed=3, **SMALL
    )
    assert named.info["scheduler"] == field.info["scheduler"] == "Karras"
    assert "Schedule type: Karras" in named.info["infotexts"][0]
    assert named.images[0].tobytes() == field.images[0].tobytes()


def test_switching_the_model_through_options_and_for_one_call(api: webuiapi.WebUIApi) -> None:
    assert MODEL in api.util_get_model_names() and SD in api.util_get_model_names()
    api.util_set_model(SD)
    assert api.util_get_current_model() == SD
    switched = api.txt2img(prompt="a cat", seed=1, steps=2, width=None, height=None)
    assert switched.info["sd_model_name"] == SD
    # no size asked: the model's own default (the tiny SD's, not shapes' 64x64)
    size = (switched.info["width"], switched.info["height"])
    assert switched.images[0].size == size and size != (64, 64)
    api.util_set_model(MODEL)
    once = api.txt2img(
        prompt="a cat", override_settings={"sd_model_checkpoint": SD.upper()}, **SMALL
    )
    assert once.info["sd_model_name"] == SD  # matched case-insensitively, for this call only
    assert api.txt2img(prompt="a cat", **SMALL).info["sd_model_name"] == MODEL
    assert api.util_get_current_model() == MODEL


def test_unknown_checkpoints_are_404s_naming_the_field(base_url: str) -> None:
    for name in ("nope/nothing", "../../etc", "/etc", "None"):
        r = httpx.post(f"{base_url}/sdapi/v1/options", json={"sd_model_checkpoint": name})
        assert r.status_code == 404 and r.json()["field"] == "sd_model_checkpoint", name
    # A1111's titles carry " [hash]": accepted, and the caller's model is still shapes
    r = httpx.post(f"{base_url}/sdapi/v1/options", json={"sd_model_checkpoint": f"{MODEL} [x]"})
    assert r.status_code == 200
    assert httpx.get(f"{base_url}/sdapi/v1/options").json()["sd_model_checkpoint"] == MODEL
    body = {"prompt": "x", "override_settings": {"sd_model_checkpoint": "nope/nothing"}, **SMALL}
    r = _post(base_url, body)
    assert r.status_code == 404
    assert r.json()["field"] == "override_settings.sd_model_checkpoint"


# --- errors


def test_an_unknown_sampler_is_a_400_listing_the_valid_names(
    base_url: str, api: webuiapi.WebUIApi
) -> None:
    r = _post(base_url, {"prompt": "x", "sampler_name": "Restart", **SMALL})
    assert r.status_code == 400
    body = r.json()
    assert body["field"] == "sampler_name" and body["error"] == "InvalidRequest"
    assert all(name in body["detail"] for name in api.util_get_sampler_names())
    with pytest.raises(RuntimeError) as caught:  # what webuiapi makes of it
        api.txt2img(prompt="x", sampler_name="Restart", **SMALL)
    assert caught.value.args[0] == 400


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"width": 65}, "width"),
        ({"height": 0}, "height"),
        ({"steps": 10_000}, "steps"),
        ({"cfg_scale": 1e9}, "cfg_scale"),
        ({"prompt": ""}, "prompt"),
        ({"seed": "lucky"}, "seed"),
        ({"batch_size": 9}, "batch_size"),
        ({"scheduler": "Polyexponential"}, "scheduler"),
        ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler"),
        ({"sampler_name": "DPM++ 2M Beta"}, "sampler_name"),  # shapes takes no beta sigmas
        ({"sampler_name": "\ud800"}, "sampler_name"),
        ({"override_settings": {"sd_model_checkpoint": "x\u0000"}}, "override_settings."),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    base_url: str, change: dict[str, Any], field: str
) -> None:
    r = _post(base_url, {"prompt": "x", **SMALL, **change})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["field"].startswith(field) and body["detail"].startswith(field)
    assert set(body) >= {"error", "detail", "body", "errors"}


def test_unknown_keys_are_ignored_with_a_short_warning(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    extra = {f"unheard_of_{i}_" + "x" * 200: {"nested": [i]} for i in range(500)}
    with caplog.at_level(logging.WARNING, logger="imagine.protocols.a1111"):
        r = _post(base_url, {"prompt": "a circle", **SMALL, **extra, "alwayson_scripts": {}})
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    (warning,) = [rec.getMessage() for rec in caplog.records if "ignoring" in rec.getMessage()]
    assert "unheard_of_0_" in warning and len(warning) < 2000


def test_send_images_false_still_reports_the_seeds(base_url: str) -> None:
    r = _post(base_url, {"prompt": "x", "batch_size": 2, "send_images": False, **SMALL})
    assert r.status_code == 200
    assert r.json()["images"] == [] and len(json.loads(r.json()["info"])["all_seeds"]) == 2


# --- Open WebUI (engine "automatic1111"), its requests as it sends them


async def _open_webui(base: str, auth: str, model: str, negative: str | None) -> dict[str, Any]:
    headers = {"authorization": auth}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/sdapi/v1/options", headers=headers) as r:
            options = await r.json()
        async with session.get(f"{base}/sdapi/v1/sd-models", headers=headers) as r:
            models = [{"id": m["title"], "name": m["model_name"]} for m in await r.json()]
        assert model in [m["id"] for m in models]
        if model != options["sd_model_checkpoint"]:  # set_image_model
            options["sd_model_checkpoint"] = model
            async with session.post(f"{base}/sdapi/v1/options", json=options, headers=headers) as r:
                r.raise_for_status()
        async with session.get(f"{base}/sdapi/v1/options", headers=headers) as r:
            assert (await r.json())["sd_model_checkpoint"] == model  # get_image_model
        data: dict[str, Any] = {
            "prompt": "a cat in a hat",
            "batch_size": 1,
            "width": 512,
            "height": 512,
            "steps": 50,
        }
        if negative is not None:
            data["negative_prompt"] = negative
        async with session.post(f"{base}/sdapi/v1/txt2img", json=data, headers=headers) as r:
            res: dict[str, Any] = await r.json(content_type=None)
            assert r.status == 200, res
            return res


@pytest.mark.parametrize(
    ("auth", "negative"),
    [("Basic ", None), ("Basic " + base64.b64encode(b":").decode(), "blurry")],
)
def test_open_webui_gets_bare_base64_pngs_and_info(
    base_url: str, auth: str, negative: str | None
) -> None:
    res = asyncio.run(_open_webui(base_url, auth, SD, negative))
    assert len(res["images"]) == 1 and "," not in res["images"][0]  # bare, no data: prefix
    assert _png(res["images"][0]).size == (512, 512)
    info = json.loads(res["info"])
    assert info["sd_model_name"] == SD and info["steps"] == 50
    assert info["negative_prompt"] == (negative or "")


# --- tokens: Basic auth, per-caller state


def test_basic_with_the_token_as_password_is_accepted_and_a_wrong_one_is_401(
    tokens_url: str,
) -> None:
    result = _api(tokens_url, TOKEN_A).txt2img(prompt="a red circle", **SMALL)
    assert len(result.images) == 1
    options = f"{tokens_url}/sdapi/v1/options"
    assert httpx.get(options, headers={"authorization": f"Bearer {TOKEN_B}"}).status_code == 200
    # requests sends `Basic ` as is (httpx refuses the trailing space)
    for auth in ({"auth": ("me", "wrong")}, {"headers": {"authorization": "Basic "}}, {}):
        r = requests.get(options, timeout=10, **auth)  # type: ignore[arg-type]
        assert r.status_code == 401 and r.json()["error"] == "Unauthorized", auth
    assert _post(tokens_url, {"prompt": "x"}, auth=("me", "wrong")).status_code == 401


def test_the_model_chosen_through_options_is_per_caller(tokens_url: str) -> None:
    a, b = _api(tokens_url, TOKEN_A), _api(tokens_url, TOKEN_B)
    a.util_set_model(SD)
    try:
        assert a.util_get_current_model() == SD and b.util_get_current_model() == MODEL
    finally:
        a.util_set_model(MODEL)


def test_progress_and_interrupt_see_only_the_callers_own_work(tokens_url: str) -> None:
    a, b = _api(tokens_url, TOKEN_A), _api(tokens_url, TOKEN_B)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(a.txt2img, prompt="a red circle", width=64, height=64, steps=LONG)

        def running() -> dict[str, Any] | None:
            assert not run.done(), run.result()  # fails at once if the txt2img did
            progress: dict[str, Any] = a.get_progress()
            return progress if progress["state"]["sampling_step"] >= 1 else None

        started = poll(running, "A's txt2img to start")
        assert started["state"]["job_count"] == 1 and started["state"]["sampling_steps"] == LONG
        assert 0 < started["progress"] < 1 and started["eta_relative"] > 0
        idle = b.get_progress()
        assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
        assert b.interrupt() == {}  # B has nothing running: A's work goes on
        step = a.get_progress()["state"]["sampling_step"]
        poll(
            lambda: True if a.get_progress()["state"]["sampling_step"] > step + 2 else None,
            "A's txt2img to go on after B's interrupt",
        )
        shown = poll(lambda: a.get_progress()["current_image"], "a preview in A's progress")
        assert max(Image.open(io.BytesIO(base64.b64decode(shown))).size) <= 64
        skipped = httpx.get(
            f"{tokens_url}/sdapi/v1/progress",
            params={"skip_current_image": "true"},
            auth=("me", TOKEN_A),
        ).json()
        assert skipped["current_image"] is None and skipped["state"]["job_count"] == 1
        assert a.interrupt() == {}
        result = run.result(timeout=60)  # without the interrupt: ~25 s more, and an image
    assert result.images == [] and result.info["all_seeds"] == []
    assert a.get_progress()["state"]["job_count"] == 0


def test_callers_are_bounded() -> None:
    callers = Callers(limit=3)
    for i in range(10):
        callers.get(f"c{i}").model = f"m{i}"
    assert callers.peek("c0") is None and callers.peek("c9").model == "m9"  # type: ignore[union-attr]
    callers.get("c7")  # seen again: kept over c8
    callers.get("c10")
    assert callers.peek("c8") is None and callers.peek("c7") is not None
